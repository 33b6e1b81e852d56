"""Measured machine peaks, in the spirit of the Empirical Roofline Toolkit: the roofs of a roofline
come from kernels run on this machine with the run's thread count, not from a datasheet.

- Compute: peak fp32 FLOP/s, the best of a large GEMM (torch.mm, and numpy's BLAS when torch is
  missing) and an FMA-bound C kernel (independent FMA chains in registers, one per OpenMP thread;
  built with the system C compiler, skipped with a note when there is none).
- Memory: the best of a STREAM triad (a = b + s*c, 3 arrays counted) and copy (2 arrays) over a
  working set several times the last-level cache. Write-allocate traffic is not counted (STREAM's
  convention), so the figure is what a kernel sees as bytes moved.

Each figure is a best-of over repeats (what the machine can do, not a typical time). Measuring
takes a few seconds; results are cached per machine fingerprint (CPU or GPU, cores, threads,
target, library versions) under the pwbench cache directory, so `pwbench run` measures once.
A user can replace them with a TOML/JSON file (`--peaks FILE`), e.g. for a datasheet comparison.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pwbench import env
from pwbench.errors import UserError
from pwbench.targets import Target

GENEROUS_MAX_GHZ = 6.0
FMA_CHAINS = 12
REPEAT_BUDGET_S = 0.4
MIN_WORKING_SET = 256 << 20


@dataclass(frozen=True)
class Peaks:
    flops_per_s: float
    bytes_per_s: float
    flops_method: str
    bytes_method: str
    source: str = "measured"  # "measured", "cache" or "file PATH"
    target: str = ""
    threads: int | None = None
    dtype: str = "float32"
    fingerprint: str = ""
    utc: str = ""
    flops_candidates: dict = field(default_factory=dict)  # method -> FLOP/s
    bytes_candidates: dict = field(default_factory=dict)  # method -> bytes/s
    notes: tuple = ()
    physical_bound_flops_per_s: float | None = None

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the bandwidth slope meets the compute roof."""
        return self.flops_per_s / self.bytes_per_s

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> Peaks:
        if not isinstance(data, dict):
            raise UserError(f"{where}: peaks must be a table with flops_per_s and bytes_per_s")
        for key in ("flops_per_s", "bytes_per_s"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise UserError(f"{where}: {key} must be a positive number (base units: FLOP/s, "
                                f"bytes/s), got {value!r}")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise UserError(f"{where}: unknown peak field(s) {sorted(unknown)}")
        data = {"flops_method": "given", "bytes_method": "given", **data}
        data["notes"] = tuple(data.get("notes", ()))
        return cls(**data)


def physical_flops_bound(cpu_flags, cores: int, max_ghz: float = GENEROUS_MAX_GHZ) -> float:
    """A bound no CPU can beat: cores x fp32 FMAs per cycle x 2 FLOP x a generous clock.
    FMAs per cycle from the widest vector extension: x86 cores have at most 2 FMA pipes of
    that width; ARM NEON cores up to 4 x 128 bit (Apple M1-M4, Neoverse V2); SVE is counted
    as 2 x 2048 bit, the largest vector the architecture allows."""
    flags = set(cpu_flags)
    if "sve" in flags or "sve2" in flags:
        fma_per_cycle = 2 * 64
    elif "avx512f" in flags:
        fma_per_cycle = 2 * 16
    elif flags & {"avx", "avx2", "fma"}:
        fma_per_cycle = 2 * 8
    elif flags & {"asimd", "neon"}:
        fma_per_cycle = 4 * 4
    elif "sse4_2" in flags:
        fma_per_cycle = 2 * 4
    else:
        fma_per_cycle = 2 * 16
    return cores * fma_per_cycle * 2 * max_ghz * 1e9


# ---- cache and override file -----------------------------------------------------------------

def cache_dir() -> Path:
    if os.environ.get("PWBENCH_CACHE_DIR"):
        return Path(os.environ["PWBENCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pwbench"


def fingerprint(target: Target, threads: int) -> str:
    meta = {**env.cpu_info(), "threads": threads, "target": target.name,
            "versions": _library_versions(target)}
    return env.fingerprint(meta)


def _cache_path(target: Target, threads: int) -> Path:
    host = "".join(c if c.isalnum() else "-" for c in platform.node())[:40] or "host"
    return cache_dir() / "peaks" / f"{host}-{fingerprint(target, threads)}.json"


def load_cached(target: Target, threads: int) -> Peaks | None:
    path = _cache_path(target, threads)
    try:
        return Peaks.from_dict(json.loads(path.read_text()), str(path))
    except (OSError, ValueError, UserError, TypeError):
        return None  # a missing or stale cache entry is measured again


def save_cached(peaks: Peaks, target: Target, threads: int) -> None:
    path = _cache_path(target, threads)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(peaks.to_dict(), indent=2))
        tmp.replace(path)
    except OSError:
        pass  # no writable cache: measure again next time


def load_file(path) -> Peaks:
    """User-supplied peaks (TOML or JSON): flops_per_s and bytes_per_s in base units."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read peaks file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{path}: malformed peaks file: {exc}") from None
    if isinstance(data, dict):
        data = data.get("peaks", data)
    return dataclasses.replace(Peaks.from_dict(data, str(path)), source=f"file {path}")


def for_run(target: Target, threads: int, override=None, refresh: bool = False,
            on_measure=lambda: None) -> Peaks:
    """The peaks a run uses: the user's file, else the cache, else measured now (and cached)."""
    if override:
        return load_file(override)
    cached = None if refresh else load_cached(target, threads)
    if cached:
        return dataclasses.replace(cached, source="cache")
    on_measure()
    peaks = measure(target, threads)
    save_cached(peaks, target, threads)
    return peaks


# ---- measurement -----------------------------------------------------------------------------

def measure(target: Target, threads: int) -> Peaks:
    if not target.torch_device and target.family != "cpu":
        raise UserError(f"target {target.name}: peaks can only be measured on this machine")
    device = "cuda" if target.family == "cuda" else "cpu"
    notes: list[str] = []
    if hasattr(os, "getloadavg"):  # other work on the machine lowers what can be measured
        notes.append(f"1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
                     "when measured")
    flops = _gemm_candidates(device, threads, notes)
    if device == "cpu":
        flops |= _fma_candidate(threads, notes)
    nbytes = _bandwidth_candidates(device, threads, notes)
    if not flops or not nbytes:
        raise UserError("cannot measure peaks: neither torch nor numpy could run; "
                        "give them with --peaks FILE")
    best_flops, best_bytes = max(flops, key=flops.get), max(nbytes, key=nbytes.get)
    info = env.cpu_info()
    bound = physical_flops_bound(info["cpu_flags"], info["cores"]) if device == "cpu" else None
    return Peaks(
        flops_per_s=flops[best_flops], bytes_per_s=nbytes[best_bytes],
        flops_method=best_flops, bytes_method=best_bytes, source="measured",
        target=target.name, threads=threads, fingerprint=fingerprint(target, threads),
        utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        flops_candidates=flops, bytes_candidates=nbytes, notes=tuple(notes),
        physical_bound_flops_per_s=bound)


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


def _gemm_candidates(device: str, threads: int, notes: list) -> dict:
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
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
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


def _numpy_gemm() -> dict:
    import numpy as np

    n = 2048
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    out = np.empty_like(a)
    rate = _best_rate(lambda: np.matmul(a, a, out=out), 2.0 * n**3)
    return {f"GEMM numpy.matmul fp32 {n}x{n}x{n}": rate}


def _bandwidth_candidates(device: str, threads: int, notes: list) -> dict:
    total = (1 << 30) if device == "cuda" else _cpu_working_set()
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


def last_level_cache_bytes() -> int:
    """Total size of the last-level cache over all its instances (Linux sysfs), 32 MiB if unknown."""
    seen, best_level, total = set(), 0, 0
    for index in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cache/index[0-9]*"):
        try:
            level = int((index / "level").read_text())
            shared = (index / "shared_cpu_list").read_text().strip()
            size = _parse_size((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if level > best_level:
            seen, best_level, total = set(), level, 0
        if level == best_level and shared not in seen:
            seen.add(shared)
            total += size
    return total or 32 << 20


def _parse_size(text: str) -> int:
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text.rstrip("KMGkmg")) * scale


def _cpu_working_set() -> int:
    want = max(4 * last_level_cache_bytes(), MIN_WORKING_SET)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return min(want, memory // 4)
    except (ValueError, OSError, AttributeError):
        return want


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
    library = cache_dir() / "fma" / f"fma-{key[:16]}.so"
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


def _fma_candidate(threads: int, notes: list) -> dict:
    vec_bytes = _vector_bytes(env.cpu_info()["cpu_flags"])
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


def _library_versions(target: Target) -> dict:
    versions = {}
    for name in ("torch", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    if target.family == "cuda":
        try:
            import torch

            versions["gpu"] = torch.cuda.get_device_name(0)
        except Exception:  # no GPU: the run itself reports that
            pass
    return versions
