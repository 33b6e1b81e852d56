"""ConvSpec arithmetic against PyTorch's own counters, and the seed articles' numbers."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from pwbench.errors import UserError
from pwbench.workloads.spec import ConvSpec

pytestmark = pytest.mark.unit


def torch_flops(spec: ConvSpec) -> int:
    x = torch.zeros(spec.input_shape)
    w = torch.zeros(spec.weight_shape)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.conv2d(x, w, None, spec.stride, spec.padding, spec.dilation, spec.groups)
    return counter.get_total_flops()


def torch_conv_shapes(spec: ConvSpec):
    conv = torch.nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride,
                           spec.padding, spec.dilation, spec.groups, bias=False)
    out = conv(torch.zeros(spec.input_shape))
    return sum(p.numel() for p in conv.parameters()), tuple(out.shape)


@st.composite
def valid_specs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3, 4]))
    c_in = groups * draw(st.integers(1, 6))
    c_out = groups * draw(st.integers(1, 6))
    if draw(st.booleans()):  # depthwise with a channel multiplier
        groups, c_out = c_in, c_in * draw(st.integers(1, 2))
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(d[0] * (k[0] - 1) + 1, 12)) 
    w = draw(st.integers(d[1] * (k[1] - 1) + 1, 12))
    return ConvSpec(draw(st.integers(1, 3)), c_in, c_out, h, w, k, s, p, d, groups)


@settings(max_examples=60, deadline=None)
@given(valid_specs())
def test_flops_params_and_shape_match_torch(spec):
    assert spec.flops == torch_flops(spec)
    params, out_shape = torch_conv_shapes(spec)
    assert spec.params == params
    assert spec.output_shape == out_shape


def test_kinds():
    assert ConvSpec(1, 64, 128, 8, 8).kind == "pointwise"
    assert ConvSpec(1, 64, 64, 8, 8, 3, padding=1, groups=64).kind == "depthwise"
    assert ConvSpec(1, 64, 64, 8, 8, 3, padding=1, groups=4).kind == "grouped"
    assert ConvSpec(1, 64, 64, 8, 8, 3, padding=1).kind == "full"


def test_seed_parameter_counts():
    full = ConvSpec(1, 256, 256, 56, 56, 3, padding=1)
    pointwise = ConvSpec(1, 256, 256, 56, 56, 1)
    assert full.params == 589_824
    assert pointwise.params == 65_536
    bottleneck = [ConvSpec(1, 256, 64, 56, 56, 1), ConvSpec(1, 64, 64, 56, 56, 3, padding=1),
                  ConvSpec(1, 64, 256, 56, 56, 1)]
    assert sum(s.params for s in bottleneck) == 69_632
    assert full.params / 69_632 == pytest.approx(8.47, abs=0.01)  # the seeds' "8.5x fewer"


def test_seed_depthwise_separable_cost_ratio():
    c_in, c_out, k = 192, 384, 3
    full = ConvSpec(1, c_in, c_out, 28, 28, k, padding=1)
    depthwise = ConvSpec(1, c_in, c_in, 28, 28, k, padding=1, groups=c_in)
    pointwise = ConvSpec(1, c_in, c_out, 28, 28, 1)
    ratio = (depthwise.macs + pointwise.macs) / full.macs
    assert ratio == pytest.approx(1 / c_out + 1 / k**2, rel=1e-12)
    assert 1 - ratio == pytest.approx(0.8863, abs=5e-5)


def test_bytes_and_intensity():
    spec = ConvSpec(1, 64, 32, 10, 10, 1)
    assert spec.bytes == 4 * (64 * 100 + 64 * 32 + 32 * 100)
    assert spec.intensity == spec.flops / spec.bytes


def test_id_is_stable_readable_and_ignores_name():
    a = ConvSpec(1, 64, 64, 56, 56, 3, padding=1, name="x", count=3)
    assert a.id == "n1_c64-64_56x56_k3_s1_p1_float32_nchw"
    assert a.id == ConvSpec(1, 64, 64, 56, 56, (3, 3), padding=(1, 1)).id
    assert ConvSpec(1, 8, 8, 9, 9, (1, 7), padding=(0, 3), groups=8, layout="NHWC").id == \
        "n1_c8-8_9x9_k1x7_s1_p0x3_g8_float32_nhwc"


@pytest.mark.parametrize("kwargs, field", [
    (dict(groups=3), "groups"),
    (dict(in_channels=0), "in_channels"),
    (dict(height=-1), "height"),
    (dict(kernel_size=9), "empty output"),
    (dict(stride=0), "stride"),
    (dict(padding=-1), "padding"),
    (dict(dtype="int3"), "dtype"),
    (dict(layout="CHWN"), "layout"),
    (dict(kernel_size=(1, 2, 3)), "kernel_size"),
])
def test_invalid_specs_name_the_field(kwargs, field):
    base = dict(batch=1, in_channels=8, out_channels=8, height=5, width=5)
    with pytest.raises(UserError, match=field):
        ConvSpec(**{**base, **kwargs})
