"""Numerical equivalence of a kernel against a float64 reference, before it is timed.

Two checks on one kernel (backends/base.py), against references computed once per shape:
1. Exact-by-construction inputs (benchdnn's idea): small integers in [-a, a], a third of them
   zero. Every product and partial sum is an integer of magnitude at most a*a*K (K = reduction
   length), so when a*a*K <= 2**p (p = significand bits of the dtype: 24 for fp32, 11 for fp16,
   8 for bf16) every sum is exact in the dtype and in any wider accumulator, in any order: a
   direct convolution must match the reference bit for bit, give the same answer on a second
   call, and leave its inputs untouched. a is the largest of 3, 2, 1 that fits: fp32 always
   takes 3; fp16 takes 3 up to K = 227, 2 up to 512, 1 up to 2048; bf16 takes 3 up to K = 28,
   2 up to 64, 1 up to 256. Beyond that (e.g. a 3x3x256 fp16 conv, K = 2304) no amplitude is
   exact in the dtype: with a = 1 the sums stay exact in the fp32 accumulator every backend uses,
   and the output may be off by its one rounding to the dtype, u_d * |ref|, and no more.
   TF32 keeps 10 fraction bits, so integers up to 3 and their products are exact in it too.
2. Seeded random inputs in [-1, 1), rounded to the dtype first, so that the reference is the
   exact result for the values the kernel holds. Each output must lie within
       tol = (rho + gamma_K) * M + u_d * (|ref| + (rho + gamma_K) * M),   M = |x| conv |w|,
   gamma_K = K*u / (1 - K*u) with u = 2**-24: the worst case of summing K products in fp32 in
   any order (Higham, 3.5), for the fp32 accumulation of every backend (cuDNN sums fp16 and bf16
   convs in fp32; pwbench's TVM compute does too); rho = 2 * 2**-10 + 2**-20 for a TF32 kernel
   (`compute = "tf32"`: each input truncated to 10 fraction bits, at worst), else 0; u_d the
   output's rounding to a half dtype (2**-11 fp16, 2**-8 bf16; 0 for fp32, whose last rounding
   is the accumulator's). Loading new inputs also exposes a kernel that returns a stale result.
   The error columns (max_abs_err, max_rel_err) come from this check; the relative error is
   max |err| / max |reference| (element-wise ratios blow up where the reference is near 0).
A kernel with inexact transforms (`exact = False`: Winograd, FFT) gets a bound instead of bit
equality on check 1: gamma_K * a*a*K plus the output rounding.
A check is "untrusted" when more than half of the exact check's reference outputs are zero.
The references (`expected`) are computed once per shape by the run and saved, so that every
worker process checks its own kernel without recomputing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

from pwbench.workloads.spec import ConvSpec

SIGNIFICAND_BITS = {"float32": 24, "float64": 53, "float16": 11, "bfloat16": 8}
UNIT_ROUNDOFF = {d: 2.0 ** -bits for d, bits in SIGNIFICAND_BITS.items()}
ACCUMULATOR_U = UNIT_ROUNDOFF["float32"]  # every backend sums in fp32 or better
TF32_RHO = 2 * 2.0**-10 + 2.0**-20  # a product of two inputs truncated to TF32
MAX_ZERO_FRACTION = 0.5


@dataclass(frozen=True)
class Check:
    verdict: str  # "passed", "failed" or "untrusted"
    max_abs_err: float
    max_rel_err: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


def exact_amplitude(spec: ConvSpec) -> int | None:
    """The largest a in 3, 2, 1 with a*a*K <= 2**p (every sum exact in the dtype), else None."""
    limit = 2 ** SIGNIFICAND_BITS[spec.dtype]
    return next((a for a in (3, 2, 1) if a * a * spec.reduction_length <= limit), None)


def exact_inputs(spec: ConvSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = exact_amplitude(spec) or 1
    values = np.arange(-a, a + 1, dtype=np.float32)
    probs = np.where(values == 0, 0.34, 0.66 / (2 * a))
    return (rng.choice(values, size=spec.input_shape, p=probs),
            rng.choice(values, size=spec.weight_shape, p=probs))


def random_inputs(spec: ConvSpec, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Uniform in [-1, 1), rounded to the spec's dtype (held as float32)."""
    rng = np.random.default_rng(seed)
    return (round_to(spec.dtype, rng.uniform(-1, 1, spec.input_shape).astype(np.float32)),
            round_to(spec.dtype, rng.uniform(-1, 1, spec.weight_shape).astype(np.float32)))


def round_to(dtype: str, a: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest value of `dtype` (ties to even), as float32."""
    if dtype == "float16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":  # keep the top 16 bits of the fp32 pattern, rounded to nearest even
        bits = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.astype(np.uint32).view(np.float32)
    return a


def reference(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Direct float64 convolution in NumPy (independent of every backend), NCHW out."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel_size, spec.stride, spec.padding, spec.dilation
    n, c, h, width = spec.input_shape
    g = spec.groups
    oh, ow = spec.out_hw
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    wg = np.asarray(w, np.float64).reshape(g, spec.out_channels // g, c // g, kh, kw)
    out = np.empty(spec.output_shape)
    for i in range(n):  # one image at a time bounds the memory of the strided view's copies
        xi = np.ascontiguousarray(x[i]).reshape(g, c // g, *x.shape[2:])
        s = xi.strides
        patches = as_strided(xi, (g, c // g, oh, ow, kh, kw),
                             (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw))
        out[i] = np.einsum("gcyxij,gocij->goyx", patches, wg, optimize=True).reshape(
            spec.out_channels, oh, ow)
    return out


@dataclass(frozen=True)
class Expected:
    """The float64 reference outputs of both checks, computed once per shape: every process that
    measures the shape checks its own kernel against them."""
    exact: np.ndarray  # on exact_inputs(seed)
    random: np.ndarray  # on random_inputs(seed + 1)
    magnitude: np.ndarray  # |x| conv |w| of the random inputs: what rounding errors scale with

    def save(self, path: Path) -> Path:
        np.savez(path, exact=self.exact, random=self.random, magnitude=self.magnitude)
        return path

    @classmethod
    def load(cls, path) -> Expected:
        with np.load(path) as data:
            return cls(data["exact"], data["random"], data["magnitude"])


def expected(spec: ConvSpec, seed: int = 0) -> Expected:
    x, w = random_inputs(spec, seed + 1)
    return Expected(reference(spec, *exact_inputs(spec, seed)), reference(spec, x, w),
                    reference(spec, np.abs(x), np.abs(w)))


def tolerance(spec: ConvSpec, magnitude: np.ndarray, ref: np.ndarray, compute: str = "") -> np.ndarray:
    """Per-output bound of the random check (the model in this module's docstring)."""
    sums = (TF32_RHO if compute == "tf32" else 0.0) + _gamma(spec.reduction_length, ACCUMULATOR_U)
    out = 0.0 if spec.dtype in ("float32", "float64") else UNIT_ROUNDOFF[spec.dtype]
    return sums * magnitude + out * (np.abs(ref) + sums * magnitude)


def reference_bytes(spec: ConvSpec) -> int:
    """Memory the references of one shape need at once: float64 inputs, weight, three outputs
    and einsum's copy of the patches of one image."""
    n, c, _, _ = spec.input_shape
    oh, ow = spec.out_hw
    patches = c * oh * ow * spec.kernel_size[0] * spec.kernel_size[1]
    return 8 * (2 * (spec.input_shape[0] * c * spec.height * spec.width + spec.params)
                + 4 * int(np.prod(spec.output_shape)) + patches)


def check(kernel, spec: ConvSpec, want: Expected | None = None, seed: int = 0) -> Check:
    """Run both checks; leaves the random inputs loaded in the kernel, ready for timing."""
    want = want or expected(spec, seed)
    x, w = exact_inputs(spec, seed)
    kernel.load(x, w)
    kernel()
    first = np.array(kernel.result(), dtype=np.float64)
    kernel()
    second = np.array(kernel.result(), dtype=np.float64)
    x_after, w_after = kernel.inputs()
    if not (np.array_equal(x_after, x) and np.array_equal(w_after, w)):
        return Check("failed", np.nan, np.nan, "the kernel modified its inputs")
    compute = getattr(kernel, "compute", "")
    problem = _compare_exact(first, want.exact, getattr(kernel, "exact", True), spec)
    if problem:
        return Check("failed", *_errors(first, want.exact), problem)
    if not np.array_equal(first, second):
        return Check("failed", *_errors(second, want.exact), "a second call gave a different result")

    kernel.load(*random_inputs(spec, seed + 1))
    kernel()
    got = np.array(kernel.result(), dtype=np.float64)
    abs_err, rel_err = _errors(got, want.random)
    bound = tolerance(spec, want.magnitude, want.random, compute)
    if got.shape != want.random.shape or not np.all(np.abs(got - want.random) <= bound):
        model = f"{spec.dtype}{' tf32' if compute == 'tf32' else ''}"
        return Check("failed", abs_err, rel_err, f"random inputs: error above the {model} "
                                                 "rounding bound")
    if np.mean(first == 0) > MAX_ZERO_FRACTION:
        return Check("untrusted", abs_err, rel_err, "over half of the exact check's outputs are zero")
    return Check("passed", abs_err, rel_err)


def _compare_exact(got, expected, exact: bool, spec: ConvSpec) -> str:
    if got.shape != expected.shape:
        return f"output shape {got.shape} != expected {expected.shape}"
    if not np.all(np.isfinite(got)):
        return "non-finite outputs"
    a = exact_amplitude(spec)
    out = 0.0 if spec.dtype in ("float32", "float64") else UNIT_ROUNDOFF[spec.dtype]
    if exact and a is not None:
        wrong = np.count_nonzero(got != expected)
        return f"exact inputs: {wrong} of {got.size} outputs differ" if wrong else ""
    # sums too long to be exact in the dtype: one output rounding; inexact transforms (Winograd,
    # FFT): the fp32 rounding bound of sums of magnitude up to a*a*K, plus that rounding
    k, a = spec.reduction_length, a or 1
    tol = out * np.abs(expected) + (0.0 if exact else _gamma(k, ACCUMULATOR_U) * a * a * k * (1 + out))
    if np.all(np.abs(got - expected) <= tol):
        return ""
    return ("exact inputs: error above one rounding to " + spec.dtype if exact else
            "exact inputs: error above the bound of an inexact algorithm")


def _errors(got, expected) -> tuple[float, float]:
    if got.shape != expected.shape:
        return np.nan, np.nan
    abs_err = float(np.max(np.abs(got - expected)))
    scale = float(np.max(np.abs(expected)))
    return abs_err, abs_err / scale if scale else abs_err


def _gamma(k: int, u: float) -> float:
    return k * u / (1 - k * u)


