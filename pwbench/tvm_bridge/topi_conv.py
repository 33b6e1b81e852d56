"""A conv as TOPI computes it: what the `tvm` backend compiles untuned and what MetaSchedule's
default design space tunes (the structured spaces have their own computes, spaces/compute.py)."""

from __future__ import annotations

import tvm
from tvm import te, topi

from pwbench.tvm_bridge import layouts
from pwbench.workloads.spec import ConvSpec

ACCUMULATE = {"float16": "float32", "bfloat16": "float32"}  # as cuDNN does: sums in fp32


def primfunc(spec: ConvSpec) -> tvm.tirx.PrimFunc:
    """TOPI compute definition of the spec's conv, as a PrimFunc with args (input, weight, out)
    in layouts.Plain. Half-precision convs accumulate in float32 and round once to the output
    dtype, as cuDNN does (TOPI's out_dtype=float16 would sum 2304 terms of a 3x3x256 conv in fp16)."""
    layout = layouts.Plain(spec)
    x = te.placeholder(layout.input_shape, spec.dtype, name="x")
    w = te.placeholder(layout.weight_shape, spec.dtype, name="w")
    args = (spec.stride, spec.padding, spec.dilation)
    acc = ACCUMULATE.get(spec.dtype, spec.dtype)
    nchw = spec.layout == "NCHW"
    if spec.kind == "depthwise":
        y = (topi.nn.depthwise_conv2d_nchw(x, w, *args, out_dtype=acc) if nchw else
             topi.nn.depthwise_conv2d_nhwc(x, w, *args, kernel_layout="HWOI", out_dtype=acc))
    elif spec.groups > 1:
        group = topi.nn.group_conv2d_nchw if nchw else topi.nn.group_conv2d_nhwc
        y = group(x, w, *args, spec.groups, out_dtype=acc)
    else:
        y = (topi.nn.conv2d_nchw(x, w, *args, out_dtype=acc) if nchw else
             topi.nn.conv2d_nhwc(x, w, *args, out_dtype=acc))
    if acc != spec.dtype:
        y = topi.cast(y, spec.dtype)
    return te.create_prim_func([x, w, y]).with_attr("global_symbol", "main")
