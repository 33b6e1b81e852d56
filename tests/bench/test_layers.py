"""A second, familiar regression gate: pytest-benchmark timing a few representative layers with the
torch backend (each checked against the float64 reference first). Outside the default selection:

    pytest tests/bench --benchmark-only -m bench --benchmark-autosave            # store a baseline
    pytest tests/bench --benchmark-only -m bench --benchmark-compare \\
        --benchmark-compare-fail=median:10%                                       # gate on it
"""

import pytest

from pwbench import targets
from pwbench.backends.base import Options
from pwbench.measure import verify
from pwbench.workloads.spec import ConvSpec

torch_backend = pytest.importorskip("pwbench.backends.torch_backend")
pytestmark = pytest.mark.bench

LAYERS = {  # MobileNetV2 / ResNet-50 shapes at batch 1
    "mbv2_expand_pw": ConvSpec(1, 24, 144, 56, 56),
    "mbv2_dw3x3": ConvSpec(1, 144, 144, 56, 56, kernel_size=3, padding=1, groups=144),
    "mbv2_project_pw": ConvSpec(1, 144, 24, 56, 56),
    "resnet50_conv3x3": ConvSpec(1, 64, 64, 56, 56, kernel_size=3, padding=1),
}


@pytest.mark.parametrize("spec", LAYERS.values(), ids=LAYERS.keys())
def test_layer(benchmark, spec):
    # one thread, fixed as pwbench runs are: comparable across machines' cores
    kernel = torch_backend.Backend(targets.resolve("cpu"), Options(threads=1)).build(spec).make()
    assert verify.check(kernel, spec).verdict == "passed"
    benchmark.extra_info |= {"spec_id": spec.id, "flops": spec.flops, "threads": 1}
    benchmark(kernel)
