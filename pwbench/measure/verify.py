"""Numerical equivalence of a kernel against a float64 reference, before it is timed.

Two checks on one kernel (backends/base.py), against references computed once per shape:
1. Exact-by-construction inputs (benchdnn's idea): small integers, a third of them zero, so every
   fp32 sum is exact in any order. A direct fp32 convolution must match the reference bit for bit,
   give the same answer on a second call, and leave its inputs untouched.
2. Seeded random inputs in [-1, 1): each output element must lie within the worst-case fp32
   rounding bound of its reduction, gamma_K * (|x| conv |w|) with gamma_K = K*u / (1 - K*u),
   u = 2**-24, K = reduction length. Loading new inputs also exposes a kernel that returns a stale
   result. The error columns (max_abs_err, max_rel_err) come from this check; the relative error
   is max |err| / max |reference| (element-wise ratios blow up where the reference is near 0).
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

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53, "float16": 2.0**-11, "bfloat16": 2.0**-8}
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


def exact_inputs(spec: ConvSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = np.array([-3, -2, -1, 0, 1, 2, 3], dtype=np.float32)
    probs = [0.11, 0.11, 0.11, 0.34, 0.11, 0.11, 0.11]
    return (rng.choice(values, size=spec.input_shape, p=probs),
            rng.choice(values, size=spec.weight_shape, p=probs))


def random_inputs(spec: ConvSpec, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, spec.input_shape).astype(np.float32),
            rng.uniform(-1, 1, spec.weight_shape).astype(np.float32))


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
    bound: np.ndarray  # per-element rounding bound of the random check

    def save(self, path: Path) -> Path:
        np.savez(path, exact=self.exact, random=self.random, bound=self.bound)
        return path

    @classmethod
    def load(cls, path) -> Expected:
        with np.load(path) as data:
            return cls(data["exact"], data["random"], data["bound"])


def expected(spec: ConvSpec, seed: int = 0) -> Expected:
    x, w = random_inputs(spec, seed + 1)
    return Expected(reference(spec, *exact_inputs(spec, seed)), reference(spec, x, w),
                    _rounding_bound(spec, x, w))


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
    problem = _compare_exact(first, want.exact, getattr(kernel, "exact", True), spec)
    if problem:
        return Check("failed", *_errors(first, want.exact), problem)
    if not np.array_equal(first, second):
        return Check("failed", *_errors(second, want.exact), "a second call gave a different result")

    kernel.load(*random_inputs(spec, seed + 1))
    kernel()
    got = np.array(kernel.result(), dtype=np.float64)
    abs_err, rel_err = _errors(got, want.random)
    if got.shape != want.random.shape or not np.all(np.abs(got - want.random) <= want.bound):
        return Check("failed", abs_err, rel_err, "random inputs: error above the fp32 rounding bound")
    if np.mean(first == 0) > MAX_ZERO_FRACTION:
        return Check("untrusted", abs_err, rel_err, "over half of the exact check's outputs are zero")
    return Check("passed", abs_err, rel_err)


def _compare_exact(got, expected, exact: bool, spec: ConvSpec) -> str:
    if got.shape != expected.shape:
        return f"output shape {got.shape} != expected {expected.shape}"
    if not np.all(np.isfinite(got)):
        return "non-finite outputs"
    if exact:
        wrong = np.count_nonzero(got != expected)
        return f"exact inputs: {wrong} of {got.size} outputs differ" if wrong else ""
    # a backend that reorders with inexact transforms (Winograd, FFT) gets the rounding bound
    u = UNIT_ROUNDOFF[spec.dtype]
    tol = _gamma(spec.reduction_length, u) * 9 * spec.reduction_length
    return "" if np.max(np.abs(got - expected)) <= tol else "exact inputs: error above bound"


def _errors(got, expected) -> tuple[float, float]:
    if got.shape != expected.shape:
        return np.nan, np.nan
    abs_err = float(np.max(np.abs(got - expected)))
    scale = float(np.max(np.abs(expected)))
    return abs_err, abs_err / scale if scale else abs_err


def _gamma(k: int, u: float) -> float:
    return k * u / (1 - k * u)


def _rounding_bound(spec: ConvSpec, x, w) -> np.ndarray:
    """gamma_K * (|x| conv |w|): the error bound of any fp32 summation order (Higham, 3.5)."""
    magnitude = reference(spec, np.abs(x), np.abs(w))
    return _gamma(spec.reduction_length, UNIT_ROUNDOFF[spec.dtype]) * magnitude
