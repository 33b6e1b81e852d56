"""The kernels that measure peaks, in the spirit of the Empirical Roofline Toolkit: the roofs of a
roofline come from kernels run on the target with the run's thread count, not from a datasheet.

- Compute: peak fp32 FLOP/s, the best of a large GEMM (torch.mm, and numpy's BLAS when torch is
  missing) and an FMA-bound kernel: on a CPU a C kernel (independent FMA chains in registers, one
  per OpenMP thread; built with the system C compiler, skipped with a note when there is none), on
  a GPU an elementwise kernel compiled by torch's jiterator (NVRTC) that runs FMA chains per
  element. A GPU adds fp16 and bf16 tensor-core GEMM roofs (torch.mm in that dtype).
- Memory: the best of a STREAM triad (a = b + s*c, 3 arrays counted) and copy (2 arrays) over a
  working set several times the last-level cache. Write-allocate traffic is not counted (STREAM's
  convention), so the figure is what a kernel sees as bytes moved.

Each figure is a best-of over repeats (what the machine can do, not a typical time). Each
function returns {method description: rate}; targets pick the best and build a Peaks.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pwbench import env, torch_flags

FMA_CHAINS = 12
REPEAT_BUDGET_S = 0.4


def _best_rate(fn, work: float, sync=lambda: None, budget_s: float | None = None) -> float:
    """work / the fastest of several calls (after one warm-up call), repeated for budget_s
    (default REPEAT_BUDGET_S)."""
    budget_s = REPEAT_BUDGET_S if budget_s is None else budget_s
    fn()
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return work / min(times)


def gemm(device: str, threads: int, notes: list) -> dict:
    try:
        import torch
    except ImportError:
        notes.append("torch is not installed: GEMM peak from numpy's BLAS (its own thread count)")
        return _numpy_gemm() if device == "cpu" else {}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _torch_gemm(torch, device)
    finally:
        torch.set_num_threads(previous)


def _torch_gemm(torch, device: str) -> dict:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch_flags.set_tf32(False)  # fp32 means fp32
    n = 1024
    while True:  # grow until one call is long enough to reach steady state
        a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
        out = torch.empty(n, n, device=device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        if time.perf_counter() - start > 0.05 or n >= 8192:
            break
        n *= 2
    rate = _best_rate(lambda: torch.mm(a, b, out=out), 2.0 * n**3, sync)
    return {f"GEMM torch.mm fp32 {n}x{n}x{n}": rate}


def gpu_gemm(dtype: str, notes: list) -> dict:
    """A large torch.mm in fp16, bf16 or TF32 (fp32 tensors, TF32 allowed for this product
    alone) on the GPU: tensor cores, fp32 accumulation. TF32 rows' roof: a TF32 conv can run
    above the fp32 roof."""
    import torch

    tf32 = dtype == "tf32"
    try:
        n, kind = 8192, torch.float32 if tf32 else getattr(torch, dtype)
        torch_flags.set_tf32(tf32)
        a, b = torch.rand(n, n, device="cuda").to(kind), torch.rand(n, n, device="cuda").to(kind)
        out = torch.empty(n, n, device="cuda", dtype=kind)
        rate = _best_rate(lambda: torch.mm(a, b, out=out), 2.0 * n**3, torch.cuda.synchronize)
    except (RuntimeError, TypeError) as exc:
        notes.append(f"{dtype} GEMM peak skipped: {str(exc).splitlines()[0][:120]}")
        return {}
    finally:
        torch_flags.set_tf32(False)  # fp32 means fp32 unless a kernel asks for TF32 itself
        torch.cuda.empty_cache()
    return {f"GEMM torch.mm {dtype} {n}x{n}x{n} (tensor cores)": rate}


FMA_ITERS = 512
JITERATOR_FMA = """
template <typename T> T pwbench_fma(T x, T y) {
    T a0 = x, a1 = x + T(1), a2 = x + T(2), a3 = x + T(3), a4 = y, a5 = y + T(1), a6 = y + T(2),
      a7 = y + T(3);
    const T m = T(0.9999999), c = T(1e-7);
    #pragma unroll 16
    for (int i = 0; i < ITERS; ++i) {
        a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;
        a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;
    }
    return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}
""".replace("ITERS", str(FMA_ITERS))


def cuda_fma(notes: list) -> dict:
    """fp32 FMA throughput: 8 independent FMA chains of FMA_ITERS steps per element over 2**24
    elements (intensity ~340 FLOP/B: compute-bound on every GPU), compiled by NVRTC through
    torch.cuda.jiterator; FMA contraction is NVRTC's default."""
    try:
        import torch

        kernel = torch.cuda.jiterator._create_jit_fn(JITERATOR_FMA)
        n = 1 << 24
        x, y = torch.rand(n, device="cuda"), torch.rand(n, device="cuda")
        rate = _best_rate(lambda: kernel(x, y), n * 8 * FMA_ITERS * 2.0, torch.cuda.synchronize)
    except Exception as exc:  # jiterator is private API: a missing NVRTC must not stop the peaks
        notes.append(f"GPU FMA kernel skipped: {str(exc).splitlines()[0][:120]}")
        return {}
    return {f"FMA kernel (torch jiterator, 8 chains x {FMA_ITERS} per element)": rate}


def _numpy_gemm() -> dict:
    import numpy as np

    n = 2048
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    out = np.empty_like(a)
    rate = _best_rate(lambda: np.matmul(a, a, out=out), 2.0 * n**3)
    return {f"GEMM numpy.matmul fp32 {n}x{n}x{n}": rate}


def bandwidth(device: str, threads: int, working_set: int, notes: list) -> dict:
    """STREAM triad and copy over `working_set` bytes (three arrays)."""
    total = working_set
    n = total // 3 // 4
    label = f"{3 * n * 4 / 2**20:.0f} MiB working set"
    try:
        import torch
    except ImportError:
        notes.append("torch is not installed: bandwidth from single-threaded numpy")
        return _numpy_stream(n, label) if device == "cpu" else {}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        a = torch.zeros(n, device=device)
        b, c = torch.rand(n, device=device), torch.rand(n, device=device)
        triad = _best_rate(lambda: torch.add(b, c, alpha=3.0, out=a), 3.0 * 4 * n, sync)
        copy = _best_rate(lambda: a.copy_(b), 2.0 * 4 * n, sync)
    finally:
        torch.set_num_threads(previous)
    return {f"STREAM triad (torch, {label})": triad, f"STREAM copy (torch, {label})": copy}


def _numpy_stream(n: int, label: str) -> dict:
    import numpy as np

    a, b, c = np.zeros(n, np.float32), np.ones(n, np.float32), np.ones(n, np.float32)
    tmp = np.empty_like(a)

    def triad():
        np.multiply(c, 3.0, out=tmp)
        np.add(b, tmp, out=a)

    return {f"STREAM triad (numpy, 5 arrays counted, {label})": _best_rate(triad, 5.0 * 4 * n),
            f"STREAM copy (numpy, {label})": _best_rate(lambda: np.copyto(a, b), 2.0 * 4 * n)}


# ---- the FMA-bound kernel --------------------------------------------------------------------

FMA_SOURCE = r"""
typedef float vec __attribute__((vector_size(VEC_BYTES)));
#define LANES (VEC_BYTES / 4)

double pwbench_fma(long iters, int threads) {
    double sink = 0;
    #pragma omp parallel num_threads(threads) reduction(+:sink)
    {
        vec acc[CHAINS], x, y;
        for (int j = 0; j < LANES; j++) { x[j] = 0.9999999f; y[j] = 1e-7f; }
        for (int i = 0; i < CHAINS; i++)
            for (int j = 0; j < LANES; j++) acc[i][j] = (float)(i + j);
        for (long n = 0; n < iters; n++) {
            #pragma GCC unroll 32
            for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * x + y;
        }
        for (int i = 0; i < CHAINS; i++)
            for (int j = 0; j < LANES; j++) sink += acc[i][j];
    }
    return sink;
}
"""


def _vector_bytes(cpu_flags) -> int:
    flags = set(cpu_flags)
    return 64 if "avx512f" in flags else 32 if flags & {"avx", "avx2"} else 16


def _build_fma(vec_bytes: int) -> Path:
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not compiler:
        raise RuntimeError("no C compiler (cc) on PATH")
    flags = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC",
             f"-DVEC_BYTES={vec_bytes}", f"-DCHAINS={FMA_CHAINS}"]
    key = hashlib.sha256(repr((FMA_SOURCE, flags, compiler, platform.node())).encode()).hexdigest()
    library = env.writable_dir("fma") / f"fma-{key[:16]}.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "fma.c"
        source.write_text(FMA_SOURCE)
        built = Path(tmp) / "fma.so"
        done = subprocess.run([compiler, *flags, str(source), "-o", str(built)],
                              capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{Path(compiler).name} failed: {done.stderr.strip()[:200]}")
        shutil.copy(built, library)
    return library


def fma(threads: int, cpu_flags, notes: list) -> dict:
    vec_bytes = _vector_bytes(cpu_flags)
    try:
        library = ctypes.CDLL(str(_build_fma(vec_bytes)))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        notes.append(f"FMA kernel skipped: {exc}")
        return {}
    kernel = library.pwbench_fma
    kernel.restype, kernel.argtypes = ctypes.c_double, [ctypes.c_long, ctypes.c_int]
    flops_per_iter = FMA_CHAINS * (vec_bytes // 4) * 2 * threads
    iters = 100_000
    while True:  # calibrate: one call must last well above the OpenMP start-up cost
        start = time.perf_counter()
        kernel(iters, threads)
        if time.perf_counter() - start > 0.05:
            break
        iters *= 4
    rate = _best_rate(lambda: kernel(iters, threads), flops_per_iter * iters)
    return {f"FMA kernel (C, {vec_bytes * 8}-bit vectors, {FMA_CHAINS} chains/thread)": rate}
