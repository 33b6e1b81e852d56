"""Blocks: the units modern CNNs are built of, as workloads measured whole.

A block is a short chain of convs with activations (and a residual, or a gate) that a framework
or compiler may run as one unit, fusing what lies between the convs. Five kinds, each with the
layers a suite file describes (suites/README.md, `[[block]]`):

  bottleneck         ResNet: 1x1 reduce, ReLU, kxk (stride s), ReLU, 1x1 expand, + shortcut, ReLU
  inverted_residual  MobileNetV2: 1x1 expand (x t), ReLU6, kxk depthwise (stride s), ReLU6,
                     1x1 project, + identity when the shape allows
  separable          depthwise kxk (stride s), ReLU, pointwise 1x1, ReLU
  se                 squeeze-and-excitation: global average pool, 1x1 reduce to mid_channels
                     (or in_channels / reduction) (+ bias), SiLU, 1x1 expand (+ bias), sigmoid,
                     times the input
  inception_branch   Inception-v3's factored 7x7: 1x1, ReLU, 1xk, ReLU, kx1, ReLU

Conventions, as for single convs (workloads/spec.py): FLOPs = 2 x the MACs of its convs (the
elementwise work of activations, adds and the pool is not counted); params = conv weights (the
SE block's biases included); bytes = the block's input, output and weights, each once: what an
ideally fused block moves, which is the point of measuring it whole.

The weights are fixed by a seed and scaled as He-initialised layers are (uniform with variance
2 / fan-in), so activations stay O(1) through the chain. The reference is this module's own
float64 NumPy evaluation. A correct fp32 kernel is within, per output element,
    LAMBDA x sqrt(K) x u x (|reference| + rms(reference)),   K = the sum of the convs' reductions,
a probabilistic rounding-error bound (Higham and Mary, "A new approach to probabilistic rounding
error analysis", SIAM J. Sci. Comput. 2019: sums of K terms in any order err by at most
lambda sqrt(K) u with a probability that approaches 1 very fast in lambda). The worst-case bound
of single convs (gamma_K |x| conv |w|) compounds through a chain of convs into one too loose to
catch a wrong kernel (a planted error of 0.1 % of the output passes it); this one catches an
error of 0.01 %, and torch's kernels use 1 to 7 % of it (measured on the five kinds). There are no exact-by-construction inputs
for blocks (sigmoid and SiLU are not exact on small integers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pwbench.errors import UserError
from pwbench.workloads import reference
from pwbench.workloads.spec import DTYPE_BYTES, LAYOUTS, ConvSpec, pair_text

LAMBDA = 16.0
KINDS = ("bottleneck", "inverted_residual", "separable", "se", "inception_branch")
ACTIVATIONS = {"bottleneck": "relu", "inverted_residual": "relu6", "separable": "relu",
               "se": "silu", "inception_branch": "relu"}


@dataclass(frozen=True)
class Step:
    """One conv of a block and what follows it."""
    role: str
    conv: ConvSpec
    activation: str = ""  # "relu", "relu6", "silu", "sigmoid" or ""
    bias: bool = False


@dataclass(frozen=True)
class Block:
    kind: str
    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    mid_channels: int = 0  # bottleneck / inception: the inner width; inverted residual: expand
    kernel_size: int = 3
    stride: int = 1
    expand: int = 6  # inverted residual: t
    reduction: int = 4  # se: in_channels / squeezed channels
    dtype: str = "float32"
    layout: str = "NCHW"
    name: str = ""
    count: int = 1
    pair: str = ""
    side: str = ""
    seed: int = 0  # fixes the weights

    exact_check = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"block kind {self.kind!r} is not one of {', '.join(KINDS)}")
        for field in ("batch", "in_channels", "out_channels", "height", "width", "kernel_size",
                      "stride", "expand", "reduction", "count"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(f"{field} must be a positive integer, got {value!r}")
        if self.dtype not in DTYPE_BYTES:
            raise UserError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
        if self.layout not in LAYOUTS:
            raise UserError(f"layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.kind in ("bottleneck", "inception_branch") and self.mid_channels <= 0:
            raise UserError(f"a {self.kind} block needs mid_channels")
        if self.kind == "se" and (self.in_channels != self.out_channels
                                  or not (self.mid_channels or self.in_channels % self.reduction == 0)):
            raise UserError("an se block keeps its channels (out_channels = in_channels) and "
                            "needs mid_channels, or a reduction that divides them")
        if self.kind == "se" and self.stride != 1:
            raise UserError("an se block has no stride")
        self.steps  # every conv's shape is checked (empty outputs, groups)

    # ---- structure -----------------------------------------------------------------------
    def _conv(self, role, cin, cout, size, k=(1, 1), stride=1, groups=1) -> ConvSpec:
        pad = ((k[0] - 1) // 2, (k[1] - 1) // 2)
        h, w = size
        return ConvSpec(self.batch, cin, cout, h, w, k, stride, pad, groups=groups,
                        dtype=self.dtype, layout=self.layout,
                        name=f"{self.label}/{role}", part_of=self.label)

    @cached_property
    def steps(self) -> tuple[Step, ...]:
        c, o, hw, k, s, act = (self.in_channels, self.out_channels, (self.height, self.width),
                               (self.kernel_size,) * 2, self.stride, ACTIVATIONS[self.kind])
        if self.kind == "bottleneck":
            m = self.mid_channels
            first = self._conv("reduce", c, m, hw)
            middle = self._conv("conv", m, m, hw, k, s)
            return (Step("reduce", first, act), Step("conv", middle, act),
                    Step("expand", self._conv("expand", m, o, middle.out_hw)))
        if self.kind == "inverted_residual":
            e = c * self.expand
            steps = [Step("expand", self._conv("expand", c, e, hw), act)] if self.expand > 1 else []
            dw = self._conv("dw", e, e, hw, k, s, groups=e)
            return (*steps, Step("dw", dw, act), Step("project", self._conv("project", e, o, dw.out_hw)))
        if self.kind == "separable":
            dw = self._conv("dw", c, c, hw, k, s, groups=c)
            return Step("dw", dw, act), Step("pw", self._conv("pw", c, o, dw.out_hw), act)
        if self.kind == "se":
            r = self.squeezed
            return (Step("reduce", self._conv("reduce", c, r, (1, 1)), act, bias=True),
                    Step("excite", self._conv("excite", r, c, (1, 1)), "sigmoid", bias=True))
        m = self.mid_channels  # inception_branch
        return (Step("1x1", self._conv("1x1", c, m, hw), act),
                Step(f"1x{self.kernel_size}", self._conv(f"1x{self.kernel_size}", m, m, hw,
                                                         (1, self.kernel_size)), act),
                Step(f"{self.kernel_size}x1", self._conv(f"{self.kernel_size}x1", m, o, hw,
                                                         (self.kernel_size, 1)), act))

    @cached_property
    def shortcut(self) -> ConvSpec | None:
        """The bottleneck's projection when its shape changes; None for an identity or none."""
        if self.kind == "bottleneck" and (self.stride != 1 or self.in_channels != self.out_channels):
            return self._conv("shortcut", self.in_channels, self.out_channels,
                              (self.height, self.width), stride=self.stride)
        return None

    @property
    def squeezed(self) -> int:
        """The se block's inner width."""
        return self.mid_channels or self.in_channels // self.reduction

    @property
    def residual(self) -> bool:
        if self.kind == "bottleneck":
            return True
        return self.kind == "inverted_residual" and self.stride == 1 and \
            self.in_channels == self.out_channels

    @property
    def convs(self) -> list[ConvSpec]:
        return [s.conv for s in self.steps] + ([self.shortcut] if self.shortcut else [])

    def layers(self) -> list[ConvSpec]:
        """Its convs as single-conv workloads, each measured alone for the fusion gain."""
        return [c.replace(count=self.count) for c in self.convs]

    def replaces(self) -> ConvSpec:
        """The full kxk conv a factored block stands in for (the seeds' comparison)."""
        k = self.kernel_size
        return ConvSpec(self.batch, self.in_channels, self.out_channels, self.height, self.width, k,
                        self.stride, (k - 1) // 2, dtype=self.dtype, layout=self.layout,
                        name=f"{self.label}/full", count=self.count, pair=self.label, side="full")

    # ---- shapes and costs ----------------------------------------------------------------
    @property
    def input_shape(self) -> tuple:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def output_shape(self) -> tuple:
        if self.kind == "se":
            return self.input_shape
        return self.steps[-1].conv.output_shape

    @property
    def params(self) -> int:
        biased = {id(s.conv) for s in self.steps if s.bias}
        return sum(c.params + (c.out_channels if id(c) in biased else 0) for c in self.convs)

    @property
    def flops(self) -> int:
        return sum(c.flops for c in self.convs)

    @property
    def bytes(self) -> int:
        elements = math.prod(self.input_shape) + math.prod(self.output_shape) + self.params
        return elements * DTYPE_BYTES[self.dtype]

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes

    @property
    def reduction_length(self) -> int:
        return sum(c.reduction_length for c in self.convs)

    @property
    def id(self) -> str:
        inner = {"bottleneck": f"-{self.mid_channels}", "inception_branch": f"-{self.mid_channels}",
                 "inverted_residual": f"-t{self.expand}",
                 "se": f"-{self.squeezed}"}.get(self.kind, "")
        spatial = "" if self.kind == "se" else f"_k{self.kernel_size}_s{self.stride}"
        return (f"{self.kind}_n{self.batch}_c{self.in_channels}{inner}-{self.out_channels}_"
                f"{self.height}x{self.width}{spatial}_{self.dtype}_{self.layout.lower()}")

    @property
    def label(self) -> str:
        return self.name or self.id

    def replace(self, **changes) -> Block:
        import dataclasses

        return dataclasses.replace(self, **changes)

    def describe(self) -> dict:
        k = self.kernel_size
        spatial = f"1x{k}" if self.kind == "inception_branch" else pair_text((k, k))
        return {
            "layer": self.label, "spec_id": self.id, "kind": self.kind,
            "batch": self.batch, "in_channels": self.in_channels,
            "out_channels": self.out_channels, "height": self.height, "width": self.width,
            "kernel_size": spatial, "stride": str(self.stride), "padding": "same",
            "dilation": "1", "groups": 1, "dtype": self.dtype, "layout": self.layout,
            "count": self.count, "pair": self.pair, "side": self.side, "part_of": "",
            "params": self.params, "flops": self.flops, "bytes": self.bytes,
            "intensity": self.intensity, "block_layers": len(self.convs),
        }

    @property
    def reference_bytes(self) -> int:
        return sum(reference.conv_bytes(c) for c in self.convs) + 8 * 4 * math.prod(self.output_shape)

    # ---- weights, reference, bound -------------------------------------------------------
    def weights(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(weight, bias or None) per conv, in `convs` order: He-scaled, fixed by the seed."""
        rng = np.random.default_rng(self.seed)
        out = []
        for conv in self.convs:
            scale = math.sqrt(6 / conv.reduction_length)  # uniform(-a, a) has variance a^2 / 3
            bias = any(s.bias and s.conv is conv for s in self.steps)
            out.append((reference.random_values(rng, conv.weight_shape, scale),
                        reference.random_values(rng, (conv.out_channels,), 0.1) if bias else None))
        return out

    def example_inputs(self, check: str, seed: int) -> tuple:
        return (reference.random_values(np.random.default_rng(seed), self.input_shape,
                                        dtype=self.dtype),)

    def reference(self, x):
        return self.evaluate(np.asarray(x, np.float64))

    def bound_scale(self, x):
        """A block's bound scales with its reference itself (see the module doc)."""
        return np.zeros(0)

    def tolerance(self, scale, ref, compute: str = "", algorithm: str = "direct"):
        u = max(reference.UNIT_ROUNDOFF[self.dtype], reference.TF32_RHO if compute == "tf32" else 0)
        u *= reference.growth(algorithm)  # a conv of the block run by Winograd or FFT
        return LAMBDA * math.sqrt(self.reduction_length) * u * (np.abs(ref) + np.sqrt(np.mean(ref**2)))

    def exact_tolerance(self, expected, exact: bool, algorithm: str = "unknown"):
        raise NotImplementedError("blocks have no exact-by-construction inputs")

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """The block in float64 NumPy."""
        params = dict(zip([id(c) for c in self.convs], self.weights()))

        def conv(spec, value):
            w, b = params[id(spec)]
            out = reference.conv2d(spec, value, w)
            return out if b is None else out + b[None, :, None, None]

        def act(name, value):
            if not name:
                return value
            return {"relu": lambda v: np.maximum(v, 0), "relu6": lambda v: np.clip(v, 0, 6),
                    "silu": lambda v: v / (1 + np.exp(-v)),
                    "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[name](value)

        if self.kind == "se":
            squeezed = x.mean(axis=(2, 3), keepdims=True)
            gate = act("sigmoid", conv(self.steps[1].conv, act(self.steps[0].activation,
                                                               conv(self.steps[0].conv, squeezed))))
            return x * gate
        y = x
        for step in self.steps:
            y = act(step.activation, conv(step.conv, y))
        if self.kind == "bottleneck":
            y = act("relu", y + (conv(self.shortcut, x) if self.shortcut else x))
        elif self.residual:
            y = y + x
        return y
