"""ConvSpec: one 2-D convolution workload and everything derived from its shape.

A workload (this, or a block of several convs: workloads/blocks.py) says what it computes: an id,
the columns of its rows (`describe`), FLOPs, bytes, its example inputs and its float64 reference
with the bound a correct kernel stays within. The runner, verifier, records and reports speak
of workloads, never of a conv's fields.

Conventions (also in README):
- MACs count every kernel tap, including taps that land on zero padding, as
  ``torch.utils.flop_counter`` does; FLOPs = 2 * MACs. No bias, no activation.
- Minimal bytes = input + weight + output, each touched exactly once (an ideal cache).
- Parameters are the weight count only (no bias), as in the seed articles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

from pwbench.errors import UserError

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
LAYOUTS = ("NCHW", "NHWC")
KINDS = ("pointwise", "depthwise", "grouped", "full")

Pair = tuple[int, int]


def as_pair(value, field: str) -> Pair:
    """Accept 3 or (3, 3) / [3, 3] like PyTorch does."""
    if isinstance(value, bool):
        raise UserError(f"{field} must be an integer or a pair of integers, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return (value[0], value[1])
    raise UserError(f"{field} must be an integer or a pair of integers, got {value!r}")


@dataclass(frozen=True)
class ConvSpec:
    """A conv2d workload. Field names follow torch.nn.Conv2d where they can."""

    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel_size: Pair = (1, 1)
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    dtype: str = "float32"
    layout: str = "NCHW"
    name: str = ""
    count: int = 1  # how many times the layer occurs in its network
    pair: str = ""  # groups layers compared in a "factored vs full" study
    side: str = ""  # "factored" or "full" within a pair
    part_of: str = ""  # the block (by name) this conv is one layer of, measured alone

    exact_check = True  # a single conv has exact-by-construction inputs

    def __post_init__(self):
        for field in ("kernel_size", "stride", "padding", "dilation"):
            object.__setattr__(self, field, as_pair(getattr(self, field), field))
        self._validate()

    def _validate(self) -> None:
        for field in ("batch", "in_channels", "out_channels", "height", "width", "groups", "count"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(f"{field} must be a positive integer, got {value!r}")
        for field in ("kernel_size", "stride", "dilation"):
            if min(getattr(self, field)) <= 0:
                raise UserError(f"{field} must be positive, got {getattr(self, field)}")
        if min(self.padding) < 0:
            raise UserError(f"padding must be >= 0, got {self.padding}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise UserError(
                f"groups={self.groups} must divide in_channels={self.in_channels} "
                f"and out_channels={self.out_channels}"
            )
        if self.dtype not in DTYPE_BYTES:
            raise UserError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
        if self.layout not in LAYOUTS:
            raise UserError(f"layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.side not in ("", "factored", "full"):
            raise UserError(f"side must be 'factored' or 'full', got {self.side!r}")
        oh, ow = self.out_hw
        if oh <= 0 or ow <= 0:
            raise UserError(
                f"empty output {oh}x{ow}: input {self.height}x{self.width} is smaller than the "
                f"dilated kernel {self.kernel_size} with padding {self.padding}"
            )

    # ---- derived shape -------------------------------------------------------------------
    @cached_property
    def out_hw(self) -> Pair:
        def out(size, k, s, p, d):
            return (size + 2 * p - d * (k - 1) - 1) // s + 1

        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            self.kernel_size, self.stride, self.padding, self.dilation)
        return out(self.height, kh, sh, ph, dh), out(self.width, kw, sw, pw, dw)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Logical NCHW shape (the layout field says how it sits in memory)."""
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_channels, *self.out_hw)

    @property
    def kind(self) -> str:
        if self.groups == 1:
            return "pointwise" if self.kernel_size == (1, 1) else "full"
        if self.groups == self.in_channels:
            return "depthwise"
        return "grouped"

    # ---- cost model ----------------------------------------------------------------------
    @property
    def params(self) -> int:
        return _prod(self.weight_shape)

    @property
    def reduction_length(self) -> int:
        """Products summed into each output element."""
        return _prod(self.weight_shape[1:])

    @property
    def macs(self) -> int:
        return _prod(self.output_shape) * self.reduction_length

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def bytes(self) -> int:
        elements = _prod(self.input_shape) + self.params + _prod(self.output_shape)
        return elements * DTYPE_BYTES[self.dtype]

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOP per minimal byte."""
        return self.flops / self.bytes

    # ---- identity ------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """Stable, readable id of the shape (name and count excluded: same shape, same id)."""
        parts = [
            f"n{self.batch}", f"c{self.in_channels}-{self.out_channels}",
            f"{self.height}x{self.width}", f"k{pair_text(self.kernel_size)}",
            f"s{pair_text(self.stride)}", f"p{pair_text(self.padding)}",
        ]
        if self.dilation != (1, 1):
            parts.append(f"d{pair_text(self.dilation)}")
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        parts += [self.dtype, self.layout.lower()]
        return "_".join(parts)

    @property
    def label(self) -> str:
        return self.name or self.id

    # ---- inputs, reference, bound (the workload contract) --------------------------------
    def example_inputs(self, check: str, seed: int) -> tuple:
        """(input, weight), logical NCHW / OIHW, held as float32: `exact` (small integers that sum
        exactly in the dtype) or `random` (rounded to the dtype): workloads/reference.py."""
        import numpy as np

        from pwbench.workloads import reference

        rng = np.random.default_rng(seed)
        if check == "exact":
            a = reference.exact_amplitude(self.dtype, self.reduction_length) or 1
            return (reference.exact_values(rng, self.input_shape, a),
                    reference.exact_values(rng, self.weight_shape, a))
        return (reference.random_values(rng, self.input_shape, dtype=self.dtype),
                reference.random_values(rng, self.weight_shape, dtype=self.dtype))

    def reference(self, x, w):
        from pwbench.workloads import reference

        return reference.conv2d(self, x, w)

    def bound_scale(self, x, w):
        """|x| conv |w|: what the rounding errors of a correct kernel scale with."""
        import numpy as np

        from pwbench.workloads import reference

        return reference.conv2d(self, np.abs(x), np.abs(w))

    def tolerance(self, scale, ref, compute: str = "", algorithm: str = "direct"):
        from pwbench.workloads import reference

        return reference.conv_tolerance(self, scale, ref, compute, algorithm)

    def exact_tolerance(self, expected, exact: bool, algorithm: str = "unknown"):
        from pwbench.workloads import reference

        return reference.exact_tolerance(self, expected, exact, algorithm)

    @property
    def reference_bytes(self) -> int:
        from pwbench.workloads import reference

        return reference.conv_bytes(self) + 3 * 8 * _prod(self.output_shape)

    def replace(self, **changes) -> ConvSpec:
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict:
        """Flat dict of fields and derived values, the columns of a result row."""
        return {
            "layer": self.label, "spec_id": self.id, "kind": self.kind,
            "batch": self.batch, "in_channels": self.in_channels,
            "out_channels": self.out_channels, "height": self.height, "width": self.width,
            "kernel_size": pair_text(self.kernel_size), "stride": pair_text(self.stride),
            "padding": pair_text(self.padding), "dilation": pair_text(self.dilation),
            "groups": self.groups, "dtype": self.dtype, "layout": self.layout,
            "count": self.count, "pair": self.pair, "side": self.side, "part_of": self.part_of,
            "params": self.params, "flops": self.flops, "bytes": self.bytes,
            "intensity": self.intensity,
        }


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= v
    return result


def pair_text(p) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"
