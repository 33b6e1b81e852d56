"""Numerical equivalence of a kernel against its workload's float64 reference, before it is timed.

Two checks on one kernel (backends/base.py); the inputs, references and bounds are the
workload's (workloads/reference.py states the model for single convs in every dtype,
workloads/blocks.py the one for blocks):
1. Exact-by-construction inputs, for workloads that have them (a single conv): a direct kernel
   whose sums are exact in its dtype must match the reference bit for bit, give the same answer
   on a second call, and leave its inputs untouched; otherwise (sums too long for a half dtype,
   or a kernel marked inexact: Winograd, FFT) the workload's exact-check tolerance applies.
2. Seeded random inputs: every output element within the workload's bound of the reference, for
   the kernel's compute mode (`compute = "tf32"` for a TF32 kernel). Loading new inputs also
   exposes a kernel that returns a stale result. The error columns (max_abs_err, max_rel_err)
   come from this check; the relative error is max |err| / max |reference| (element-wise ratios
   blow up where the reference is near 0).
A kernel's `algorithm` (direct, winograd, fft, unknown: backends/torch_backend.py) sets both
checks' bounds (workloads/reference.py, 3.); the bounds applied are said in the Check's `mode`
(the row's `check_mode`), so that a check loosened because cuDNN's kernels could not be seen
shows it.
A check is "untrusted" when more than half of the exact check's reference outputs are zero.
The references (`expected`) are computed once per workload by the run and saved, so that every
worker process checks its own kernel without recomputing them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pwbench.workloads import reference

MAX_ZERO_FRACTION = 0.5


@dataclass(frozen=True)
class Check:
    verdict: str  # "passed", "failed" or "untrusted"
    max_abs_err: float
    max_rel_err: float
    detail: str = ""
    mode: str = ""  # which bounds were applied (the row's check_mode)

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


@dataclass(frozen=True)
class Expected:
    """The float64 reference outputs of both checks, computed once per workload: every process
    that measures it checks its own kernel against them."""
    exact: np.ndarray  # on example_inputs("exact", seed); empty when the workload has none
    random: np.ndarray  # on example_inputs("random", seed + 1)
    scale: np.ndarray  # what the random check's bound scales with (a conv: |x| conv |w|)

    def save(self, path: Path) -> Path:
        np.savez(path, exact=self.exact, random=self.random, scale=self.scale)
        return path

    @classmethod
    def load(cls, path) -> Expected:
        with np.load(path) as data:
            return cls(data["exact"], data["random"], data["scale"])


def expected(workload, seed: int = 0) -> Expected:
    arrays = workload.example_inputs("random", seed + 1)
    exact = (workload.reference(*workload.example_inputs("exact", seed)) if workload.exact_check
             else np.zeros(0))
    return Expected(exact, workload.reference(*arrays), workload.bound_scale(*arrays))


def check(kernel, workload, want: Expected | None = None, seed: int = 0) -> Check:
    """Run both checks; leaves the random inputs loaded in the kernel, ready for timing."""
    want = want or expected(workload, seed)
    algorithm = algorithm_of(kernel)
    compute = getattr(kernel, "compute", "")
    mode = check_mode(workload, algorithm, compute)
    first = None
    if workload.exact_check:
        failed, first = _exact_check(kernel, workload, want, seed, algorithm)
        if failed:
            return replace(failed, mode=mode)
    arrays = workload.example_inputs("random", seed + 1)
    kernel.load(*arrays)
    kernel()
    got = np.array(kernel.result(), dtype=np.float64)
    abs_err, rel_err = _errors(got, want.random)
    if got.shape != want.random.shape or not np.all(np.abs(got - want.random) <= workload.tolerance(
            want.scale, want.random, compute, algorithm)):
        model = f"{workload.dtype}{' tf32' if compute == 'tf32' else ''}"
        model += f" {algorithm}" if algorithm != "direct" else ""
        return Check("failed", abs_err, rel_err, f"random inputs: error above the {model} "
                                                 "rounding bound", mode)
    if not workload.exact_check and not _unchanged(kernel, arrays):
        return Check("failed", abs_err, rel_err, "the kernel modified its inputs", mode)
    if first is not None and np.mean(first == 0) > MAX_ZERO_FRACTION:
        return Check("untrusted", abs_err, rel_err, "over half of the exact check's outputs are "
                                                    "zero", mode)
    return Check("passed", abs_err, rel_err, mode=mode)


def algorithm_of(kernel) -> str:
    """The kernel's algorithm; one that only says it is not exact is of an unknown one."""
    return getattr(kernel, "algorithm", "direct" if getattr(kernel, "exact", True) else "unknown")


def check_mode(workload, algorithm: str, compute: str = "") -> str:
    """The bounds a check applies, in words: 'exact: bitwise; random: float32 bound'."""
    random = f"{workload.dtype}{' tf32' if compute == 'tf32' else ''} bound"
    if algorithm != "direct":
        random += f" x{reference.growth(algorithm):g} ({algorithm} algorithm)"
    if not workload.exact_check:
        return f"random: {random}"
    k = workload.reduction_length
    if algorithm != "direct":
        exact = f"{algorithm}-algorithm bound"
    elif reference.exact_amplitude(workload.dtype, k) is None:
        exact = f"one rounding to {workload.dtype}"
    else:
        exact = "bitwise"
    return f"exact: {exact}; random: {random}"


def _exact_check(kernel, workload, want: Expected, seed: int, algorithm: str):
    """(a failed Check or None, the first output)."""
    arrays = workload.example_inputs("exact", seed)
    kernel.load(*arrays)
    kernel()
    first = np.array(kernel.result(), dtype=np.float64)
    kernel()
    second = np.array(kernel.result(), dtype=np.float64)
    if not _unchanged(kernel, arrays):
        return Check("failed", np.nan, np.nan, "the kernel modified its inputs"), first
    problem = _compare_exact(first, want.exact, algorithm, workload)
    if problem:
        return Check("failed", *_errors(first, want.exact), problem), first
    if not np.array_equal(first, second):
        return Check("failed", *_errors(second, want.exact), "a second call gave a different result"), first
    return None, first


def _unchanged(kernel, arrays) -> bool:
    after = kernel.inputs()
    return len(after) == len(arrays) and all(np.array_equal(a, b) for a, b in zip(after, arrays))


def _compare_exact(got, expected, algorithm: str, workload) -> str:
    if got.shape != expected.shape:
        return f"output shape {got.shape} != expected {expected.shape}"
    if not np.all(np.isfinite(got)):
        return "non-finite outputs"
    exact = algorithm == "direct"
    tol = workload.exact_tolerance(expected, exact, algorithm)
    if np.isscalar(tol) and tol == 0:
        wrong = np.count_nonzero(got != expected)
        return f"exact inputs: {wrong} of {got.size} outputs differ" if wrong else ""
    if np.all(np.abs(got - expected) <= tol):
        return ""
    return ("exact inputs: error above one rounding to " + workload.dtype if exact else
            "exact inputs: error above the bound of an inexact algorithm")


def _errors(got, expected) -> tuple[float, float]:
    if got.shape != expected.shape:
        return np.nan, np.nan
    abs_err = float(np.max(np.abs(got - expected)))
    scale = float(np.max(np.abs(expected)))
    return abs_err, abs_err / scale if scale else abs_err
