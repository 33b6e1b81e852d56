"""How a TVM kernel holds pwbench's logical arrays (NCHW input, OIHW weight, NCHW output) in its
three buffers: its layout and its packing step. NumPy only: the compiler side, the runtime side,
a board's session and the instruction clock's C entry point all use the same layout object.

- `Plain`: TOPI's computes (the `tvm` backend, the default design space): NCHW or NHWC
  activations; the weight OIHW, or HWIO for NHWC (depthwise: (C, m, kh, kw) or HWOI).
- `Packed`: the structured spaces' kernels (tvm_bridge/spaces): NCHW or NHWC activations, or
  NCHW[x]c (blocked: NCHW[ic_bn]c in, NCHW[oc_bn]c out, what a network whose layers all use the
  layout would pass between them); the weight pre-packed to (O'/oc_bn, C'/ic_bn, kh, kw, ic_bn,
  oc_bn), depthwise (C'/bn, kh, kw, bn), where C' and O' are the channels padded up to whole
  blocks (zeros). Packing the weight is load-time work, never inside the timed call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pwbench.workloads.spec import ConvSpec

NCHW, NHWC, BLOCKED = "NCHW", "NHWC", "NCHWc"


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


@dataclass(frozen=True)
class Plain:
    """A TOPI compute's buffers: the activations in the spec's layout, the weight in TOPI's."""
    spec: ConvSpec

    @property
    def name(self) -> str:
        return self.spec.layout

    @property
    def input_shape(self) -> tuple:
        n, c, h, w = self.spec.input_shape
        return (n, c, h, w) if self.spec.layout == NCHW else (n, h, w, c)

    @property
    def output_shape(self) -> tuple:
        n, c, h, w = self.spec.output_shape
        return (n, c, h, w) if self.spec.layout == NCHW else (n, h, w, c)

    @property
    def weight_shape(self) -> tuple:
        spec = self.spec
        o, i, kh, kw = spec.weight_shape
        if spec.kind == "depthwise":  # multiplier m = o / c: (C, m, kh, kw) or HWOI (kh, kw, C, m)
            c, m = spec.in_channels, o // spec.in_channels
            return (c, m, kh, kw) if spec.layout == NCHW else (kh, kw, c, m)
        return (o, i, kh, kw) if spec.layout == NCHW else (kh, kw, i, o)

    def to_input(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x) if self.spec.layout == NCHW else _nhwc(x)

    def from_input(self, a: np.ndarray) -> np.ndarray:
        return a if self.spec.layout == NCHW else _nchw(a)

    from_output = from_input

    def pack_weight(self, w: np.ndarray) -> np.ndarray:
        """Logical OIHW -> the compute's weight (depthwise O = C*m, oc = c*m + q as in torch)."""
        spec = self.spec
        if spec.kind == "depthwise":
            w = w.reshape(spec.in_channels, -1, *spec.kernel_size)
            return np.ascontiguousarray(w if spec.layout == NCHW else w.transpose(2, 3, 0, 1))
        return np.ascontiguousarray(w if spec.layout == NCHW else w.transpose(2, 3, 1, 0))

    def unpack_weight(self, w: np.ndarray) -> np.ndarray:
        if self.spec.layout == NHWC:
            w = w.transpose(2, 3, 0, 1) if self.spec.kind == "depthwise" else w.transpose(3, 2, 0, 1)
        return np.ascontiguousarray(w).reshape(self.spec.weight_shape)


@dataclass(frozen=True)
class Packed:
    """A structured kernel's buffers (the module docstring): `layout` NCHW, NHWC or NCHWc."""
    spec: ConvSpec
    layout: str
    ic_bn: int
    oc_bn: int

    @property
    def name(self) -> str:
        return self.layout

    @property
    def depthwise(self) -> bool:
        return self.spec.kind == "depthwise"

    @property
    def oc_padded(self) -> int:
        return math.ceil(self.spec.out_channels / self.oc_bn) * self.oc_bn

    @property
    def ic_padded(self) -> int:
        if self.depthwise:
            return self.oc_padded
        return math.ceil(self.spec.in_channels / self.ic_bn) * self.ic_bn

    @property
    def input_shape(self) -> tuple:
        n, c, h, w = self.spec.input_shape
        return {NCHW: (n, c, h, w), NHWC: (n, h, w, c),
                BLOCKED: (n, self.ic_padded // self.ic_bn, h, w, self.ic_bn)}[self.layout]

    @property
    def output_shape(self) -> tuple:
        n, c, h, w = self.spec.output_shape
        return {NCHW: (n, c, h, w), NHWC: (n, h, w, c),
                BLOCKED: (n, self.oc_padded // self.oc_bn, h, w, self.oc_bn)}[self.layout]

    @property
    def weight_shape(self) -> tuple:
        _, _, kh, kw = self.spec.weight_shape
        if self.depthwise:
            return (self.oc_padded // self.oc_bn, kh, kw, self.oc_bn)
        return (self.oc_padded // self.oc_bn, self.ic_padded // self.ic_bn, kh, kw, self.ic_bn,
                self.oc_bn)

    def to_input(self, x: np.ndarray) -> np.ndarray:
        return _to_blocked(x, self.ic_bn, self.ic_padded) if self.layout == BLOCKED else \
            np.ascontiguousarray(x) if self.layout == NCHW else _nhwc(x)

    def from_input(self, a: np.ndarray) -> np.ndarray:
        return self._logical(a, self.spec.in_channels)

    def from_output(self, a: np.ndarray) -> np.ndarray:
        return self._logical(a, self.spec.out_channels)

    def _logical(self, a: np.ndarray, channels: int) -> np.ndarray:
        if self.layout == BLOCKED:
            n, cc, h, w, bn = a.shape
            return np.ascontiguousarray(a.transpose(0, 1, 4, 2, 3).reshape(n, cc * bn, h, w)
                                        [:, :channels])
        return a if self.layout == NCHW else _nchw(a)

    def pack_weight(self, w: np.ndarray) -> np.ndarray:
        o, i, kh, kw = self.spec.weight_shape
        op, ob = self.oc_padded, self.oc_bn
        if self.depthwise:
            full = np.zeros((op, kh, kw), w.dtype)
            full[:o] = w.reshape(o, kh, kw)
            return np.ascontiguousarray(full.reshape(op // ob, ob, kh, kw).transpose(0, 2, 3, 1))
        ip, ib = self.ic_padded, self.ic_bn
        full = np.zeros((op, ip, kh, kw), w.dtype)
        full[:o, :i] = w
        return np.ascontiguousarray(full.reshape(op // ob, ob, ip // ib, ib, kh, kw)
                                    .transpose(0, 2, 4, 5, 3, 1))

    def unpack_weight(self, w: np.ndarray) -> np.ndarray:
        o, i, kh, kw = self.spec.weight_shape
        if self.depthwise:
            full = np.ascontiguousarray(w.transpose(0, 3, 1, 2)).reshape(self.oc_padded, kh, kw)
            return full[:o].reshape(self.spec.weight_shape)
        full = np.ascontiguousarray(w.transpose(0, 5, 1, 4, 2, 3))
        return full.reshape(self.oc_padded, self.ic_padded, kh, kw)[:o, :i]


def _to_blocked(x: np.ndarray, bn: int, padded: int) -> np.ndarray:
    n, c, h, w = x.shape
    full = np.zeros((n, padded, h, w), x.dtype)
    full[:, :c] = x
    return np.ascontiguousarray(full.reshape(n, padded // bn, bn, h, w).transpose(0, 1, 3, 4, 2))
