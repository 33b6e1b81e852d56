"""How pwbench's logical arrays (NCHW input, OIHW weight) sit in a TVM kernel's buffers. NumPy
only: the compiler and the runtime side both use it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pwbench.workloads.spec import ConvSpec


def input_shape(spec: ConvSpec) -> tuple:
    n, c, h, w = spec.input_shape
    return (n, c, h, w) if spec.layout == "NCHW" else (n, h, w, c)


def output_shape(spec: ConvSpec) -> tuple:
    n, c, h, w = spec.output_shape
    return (n, c, h, w) if spec.layout == "NCHW" else (n, h, w, c)


def weight_shape(spec: ConvSpec) -> tuple:
    o, i, kh, kw = spec.weight_shape
    if spec.kind == "depthwise":  # multiplier m = o / c: (C, m, kh, kw) or HWOI (kh, kw, C, m)
        c, m = spec.in_channels, o // spec.in_channels
        return (c, m, kh, kw) if spec.layout == "NCHW" else (kh, kw, c, m)
    return (o, i, kh, kw) if spec.layout == "NCHW" else (kh, kw, i, o)


def weight_to_tvm(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """Logical OIHW -> the compute's weight layout (depthwise O = C*m, oc = c*m + q as in torch)."""
    if spec.kind == "depthwise":
        c, m = spec.in_channels, spec.out_channels // spec.in_channels
        w = w.reshape(c, m, *spec.kernel_size)
        return w if spec.layout == "NCHW" else w.transpose(2, 3, 0, 1)
    return w if spec.layout == "NCHW" else w.transpose(2, 3, 1, 0)


def weight_from_tvm(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    if spec.layout == "NHWC":
        w = w.transpose(2, 3, 0, 1) if spec.kind == "depthwise" else w.transpose(3, 2, 0, 1)
    return w.reshape(spec.weight_shape)


def to_layout(spec: ConvSpec, a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a if spec.layout == "NCHW" else a.transpose(0, 2, 3, 1))


def from_layout(spec: ConvSpec, a: np.ndarray) -> np.ndarray:
    return a if spec.layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 3, 1, 2))


# ---- structured kernels (tvm_bridge/spaces.py): packed weights, blocked activations -------------
@dataclass(frozen=True)
class Packing:
    """How a structured kernel holds the logical arrays: its activation layout (NCHW, NHWC, or
    NCHWc: NCHW[ic_bn]c in, NCHW[oc_bn]c out) and the weight packed to
    (O/oc_bn, I/ic_bn, kh, kw, ic_bn, oc_bn), depthwise (C/bn, kh, kw, bn). Packing the weight is
    load-time work, never inside the timed call."""
    layout: str
    ic_bn: int
    oc_bn: int

    @property
    def blocked(self) -> bool:
        return self.layout == "NCHWc"


def packed_input_shape(spec: ConvSpec, p: Packing) -> tuple:
    n, c, h, w = spec.input_shape
    return {"NCHW": (n, c, h, w), "NHWC": (n, h, w, c),
            "NCHWc": (n, c // p.ic_bn, h, w, p.ic_bn)}[p.layout]


def packed_output_shape(spec: ConvSpec, p: Packing) -> tuple:
    n, c, h, w = spec.output_shape
    return {"NCHW": (n, c, h, w), "NHWC": (n, h, w, c),
            "NCHWc": (n, c // p.oc_bn, h, w, p.oc_bn)}[p.layout]


def packed_weight_shape(spec: ConvSpec, p: Packing) -> tuple:
    o, i, kh, kw = spec.weight_shape
    if spec.kind == "depthwise":
        return (o // p.oc_bn, kh, kw, p.oc_bn)
    return (o // p.oc_bn, i // p.ic_bn, kh, kw, p.ic_bn, p.oc_bn)


def pack_weight(spec: ConvSpec, p: Packing, w: np.ndarray) -> np.ndarray:
    o, i, kh, kw = spec.weight_shape
    if spec.kind == "depthwise":
        return np.ascontiguousarray(w.reshape(o // p.oc_bn, p.oc_bn, kh, kw).transpose(0, 2, 3, 1))
    return np.ascontiguousarray(w.reshape(o // p.oc_bn, p.oc_bn, i // p.ic_bn, p.ic_bn, kh, kw)
                                .transpose(0, 2, 4, 5, 3, 1))


def unpack_weight(spec: ConvSpec, p: Packing, w: np.ndarray) -> np.ndarray:
    if spec.kind == "depthwise":
        return np.ascontiguousarray(w.transpose(0, 3, 1, 2)).reshape(spec.weight_shape)
    return np.ascontiguousarray(w.transpose(0, 5, 1, 4, 2, 3)).reshape(spec.weight_shape)


def to_packed(a: np.ndarray, layout: str, bn: int) -> np.ndarray:
    """A logical NCHW activation in a kernel's layout."""
    if layout == "NCHWc":
        n, c, h, w = a.shape
        return np.ascontiguousarray(a.reshape(n, c // bn, bn, h, w).transpose(0, 1, 3, 4, 2))
    return np.ascontiguousarray(a if layout == "NCHW" else a.transpose(0, 2, 3, 1))


def from_packed(a: np.ndarray, layout: str) -> np.ndarray:
    if layout == "NCHWc":
        n, cc, h, w, bn = a.shape
        return np.ascontiguousarray(a.transpose(0, 1, 4, 2, 3)).reshape(n, cc * bn, h, w)
    return a if layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 3, 1, 2))
