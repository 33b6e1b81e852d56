"""The verifier passes correct kernels and catches planted wrong ones."""

import numpy as np
import pytest

from pwbench import targets
from pwbench.measure import verify
from pwbench.backends import torch_backend
from pwbench.workloads.spec import ConvSpec

pytestmark = pytest.mark.cpu

CPU = targets.resolve("cpu")
SPEC = ConvSpec(2, 12, 16, 9, 9, 3, stride=1, padding=1)


def torch_kernel(spec=SPEC):
    return torch_backend.Backend(CPU).build(spec).make()


class OffByOneUlp:
    """Correct except one output element, nudged by one ulp."""

    def __init__(self):
        self.inner = torch_kernel()
        self.load, self.inputs, self.sync, self.exact = (
            self.inner.load, self.inner.inputs, None, True)

    def __call__(self):
        self.inner()

    def result(self):
        out = self.inner.result().copy()
        out.flat[17] = np.nextafter(out.flat[17], np.float32(np.inf))
        return out


class StaleResult(OffByOneUlp):
    """Computes once and keeps returning that first output."""

    def __init__(self):
        super().__init__()
        self.cached = None

    def __call__(self):
        if self.cached is None:
            self.inner()
            self.cached = self.inner.result()

    def result(self):
        return self.cached


class UninitialisedOutput(OffByOneUlp):
    """Never writes its output buffer."""

    def __call__(self):
        pass

    def result(self):
        return np.empty(SPEC.output_shape, np.float32)


class MutatesInput(OffByOneUlp):
    """Right answer, but scribbles on its input afterwards (an in-place activation gone wrong)."""

    def __call__(self):
        self.inner()
        self.inner.x.relu_()

    def result(self):
        return self.inner.result()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("spec", [
    SPEC,
    ConvSpec(1, 32, 64, 7, 7, 1),
    ConvSpec(1, 24, 24, 11, 9, 5, stride=2, padding=2, groups=24),
    ConvSpec(2, 12, 6, 10, 10, (1, 7), padding=(0, 3), dilation=(1, 2), groups=3),
], ids=lambda s: getattr(s, "id", None))
def test_correct_torch_kernels_pass(spec, layout):
    spec = spec.replace(layout=layout)
    check = verify.check(torch_kernel(spec), spec)
    assert check.verdict == "passed", check.detail
    assert 0 <= check.max_rel_err < 1e-5


@pytest.mark.parametrize("bad, detail", [
    (OffByOneUlp, "1 of"),
    (StaleResult, "random inputs"),
    (UninitialisedOutput, "exact inputs|non-finite"),
    (MutatesInput, "modified its inputs"),
])
def test_planted_wrong_kernels_fail(bad, detail):
    check = verify.check(bad(), SPEC)
    assert check.verdict == "failed"
    assert check.detail and __import__("re").search(detail, check.detail), check.detail


def test_mostly_zero_outputs_are_untrusted():
    spec = ConvSpec(1, 4, 4, 2, 2, 1, padding=4)  # outputs over the padding are all zero
    assert verify.check(torch_kernel(spec), spec).verdict == "untrusted"


def test_exact_inputs_are_exact_in_fp32():
    spec = ConvSpec(1, 512, 8, 6, 6, 3, padding=1)
    x, w = spec.example_inputs("exact", 0)
    assert set(np.unique(x)) <= set(range(-3, 4)) and np.mean(x == 0) > 0.25
    ref = spec.reference(x, w)
    assert np.abs(ref).max() * 1 < 2**24 and np.array_equal(ref, np.round(ref))


def test_reference_matches_float64_torch():
    import torch

    spec = ConvSpec(2, 6, 9, 13, 8, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=3)
    x, w = spec.example_inputs("random", 1)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                          None, spec.stride, spec.padding, spec.dilation, spec.groups)
    np.testing.assert_allclose(spec.reference(x, w), expected.numpy(), rtol=0, atol=1e-12)
