"""The structured spaces' computes (TE), one PrimFunc per task: (data, packed weight, out).

    data_pack  the input padded (only what is read) and blocked to (n, C'/ic_bn, Hp, Wp, ic_bn)
    conv       (n, O'/oc_bn, OH, OW, oc_bn), reducing over input-channel chunks, taps and the
               channels of a chunk (two channel axes, so the body has no div/mod)
    unpack     the blocked output in the task's layout (NCHW or NHWC), channels >= O dropped

C' and O' are the channel counts padded up to whole blocks (choices.padded; equal to C and O
unless a block does not divide them): the padded input channels read as zeros, the packed weight
is zero there, so the padded outputs are computed and never stored. The blocked layout (NCHW[x]c
in and out) keeps the padding in its buffers, as a network of such layers would.

`index64`: every extent and index an int64, as Relax's legalized operators have them, so that a
structured conv called from a Relax program fuses with the elementwise operators after it
(FuseTIR refuses to map int32 and int64 buffers onto one tensor).
"""

from __future__ import annotations

import tvm
from tvm import te

from pwbench.tvm_bridge.layouts import BLOCKED, NCHW, NHWC


def _geometry(spec):
    (kh, kw), (sh, sw), (ph, pw) = spec.kernel_size, spec.stride, spec.padding
    oh, ow = spec.out_hw
    return kh, kw, sh, sw, ph, pw, (oh - 1) * sh + kh, (ow - 1) * sw + kw


class _Te:
    """te.placeholder, te.compute and te.reduce_axis with int32 or int64 extents."""

    def __init__(self, index64: bool):
        self.index64 = index64

    def dims(self, values):
        return [tvm.tirx.IntImm("int64", int(v)) for v in values] if self.index64 else list(values)

    def placeholder(self, shape, dtype, name):
        return te.placeholder(self.dims(shape), dtype, name=name)

    def compute(self, shape, body, name):
        return te.compute(self.dims(shape), body, name=name)

    def reduce_axis(self, extent, name):
        return te.reduce_axis(tuple(self.dims((0, extent))), name)


def _packed_input(spec, bn: int, c_pad: int, layout: str, T: _Te):
    """(data placeholder, data_pack); for an unpadded blocked input, the input itself."""
    n, c, h, w = spec.input_shape
    kh, kw, sh, sw, ph, pw, hp, wp = _geometry(spec)
    shape = {NCHW: (n, c, h, w), NHWC: (n, h, w, c), BLOCKED: (n, c_pad // bn, h, w, bn)}[layout]
    data = T.placeholder(shape, spec.dtype, name="data")
    if layout == BLOCKED and (ph, pw) == (0, 0):
        return data, data
    read = {NCHW: lambda b, q, y, x, i: data[b, q * bn + i, y, x],
            NHWC: lambda b, q, y, x, i: data[b, y, x, q * bn + i],
            BLOCKED: lambda b, q, y, x, i: data[b, q, y, x, i]}[layout]
    zero = tvm.tirx.const(0, spec.dtype)

    def pack(b, q, y, x, i):
        inside = [y >= ph, y < h + ph, x >= pw, x < w + pw]
        if c_pad != c and layout != BLOCKED:
            inside.append(q * bn + i < c)
        return tvm.tirx.if_then_else(tvm.tirx.all(*inside), read(b, q, y - ph, x - pw, i), zero)

    return data, T.compute((n, c_pad // bn, hp, wp, bn), pack, name="data_pack")


def _output(spec, conv, bn: int, layout: str, T: _Te):
    n, oc, oh, ow = spec.output_shape
    if layout == BLOCKED:
        return conv
    if layout == NCHW:
        return T.compute((n, oc, oh, ow), lambda b, c, y, x: conv[b, c // bn, y, x, c % bn],
                         name="unpack")
    return T.compute((n, oh, ow, oc), lambda b, y, x, c: conv[b, c // bn, y, x, c % bn],
                     name="unpack")


def conv_func(task, index64: bool = False) -> tvm.tirx.PrimFunc:
    """Full or pointwise conv of a task (spaces.Task)."""
    spec, ic_bn, oc_bn, T = task.spec, task.ic_bn, task.oc_bn, _Te(index64)
    kh, kw, sh, sw, *_ = _geometry(spec)
    n, _, oh, ow = spec.output_shape
    icc = task.ic_padded // ic_bn
    data, packed = _packed_input(spec, ic_bn, task.ic_padded, task.layout, T)
    kernel = T.placeholder((task.oc_padded // oc_bn, icc, kh, kw, ic_bn, oc_bn), spec.dtype,
                           name="kernel")
    rc, ry = T.reduce_axis(icc, "rc"), T.reduce_axis(kh, "ry")
    rx, ri = T.reduce_axis(kw, "rx"), T.reduce_axis(ic_bn, "ri")
    conv = T.compute(
        (n, task.oc_padded // oc_bn, oh, ow, oc_bn),
        lambda b, o, y, x, j: te.sum(
            packed[b, rc, y * sh + ry, x * sw + rx, ri] * kernel[o, rc, ry, rx, ri, j],
            axis=[rc, ry, rx, ri]), name="conv")
    out = _output(spec, conv, oc_bn, task.layout, T)
    return te.create_prim_func([data, kernel, out]).with_attr("global_symbol", "main")


def dw_func(task, index64: bool = False) -> tvm.tirx.PrimFunc:
    """Depthwise conv (multiplier 1) of a task: weight (C'/bn, kh, kw, bn)."""
    spec, bn, T = task.spec, task.oc_bn, _Te(index64)
    kh, kw, sh, sw, *_ = _geometry(spec)
    n, _, oh, ow = spec.output_shape
    data, packed = _packed_input(spec, bn, task.oc_padded, task.layout, T)
    kernel = T.placeholder((task.oc_padded // bn, kh, kw, bn), spec.dtype, name="kernel")
    ry, rx = T.reduce_axis(kh, "ry"), T.reduce_axis(kw, "rx")
    conv = T.compute(
        (n, task.oc_padded // bn, oh, ow, bn),
        lambda b, q, y, x, j: te.sum(
            packed[b, q, y * sh + ry, x * sw + rx, j] * kernel[q, ry, rx, j], axis=[ry, rx]),
        name="conv")
    out = _output(spec, conv, bn, task.layout, T)
    return te.create_prim_func([data, kernel, out]).with_attr("global_symbol", "main")
