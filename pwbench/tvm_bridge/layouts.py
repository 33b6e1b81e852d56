"""How pwbench's logical arrays (NCHW input, OIHW weight) sit in a TVM kernel's buffers. NumPy
only: the compiler and the runtime side both use it."""

from __future__ import annotations

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
