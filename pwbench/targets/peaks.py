"""Machine peaks: the roofs of every roofline, measured on the target (targets/peak_kernels.py)
with the run's thread count, cached per target fingerprint and thread count under the pwbench
cache directory (so `pwbench run` measures once), or given in a TOML/JSON file (`--peaks FILE`),
e.g. for a datasheet comparison."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

from pwbench import env, files
from pwbench.errors import UserError
from pwbench.targets.base import Target

GENEROUS_MAX_GHZ = 6.0


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
    flops_by_dtype: dict = field(default_factory=dict)  # other dtypes' roofs, e.g. fp16 tensor cores

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the bandwidth slope meets the compute roof."""
        return self.flops_per_s / self.bytes_per_s

    def flops_for(self, dtype: str) -> float | None:
        """The compute roof for a dtype: the main one, another measured one, or None."""
        return self.flops_per_s if dtype == self.dtype else self.flops_by_dtype.get(dtype)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> Peaks:
        if not isinstance(data, dict):
            raise UserError(f"{where}: peaks must be a table with flops_per_s and bytes_per_s")
        for key in ("flops_per_s", "bytes_per_s"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
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

def fingerprint(target: Target, threads: int) -> str:
    """What the peaks depend on: the hardware, threads, and the libraries whose kernels measure."""
    versions = {}
    for name in ("torch", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return env.fingerprint({**target.fingerprint_facts(), "threads": threads,
                            "target": target.name, "versions": versions})


def _cache_path(target: Target, threads: int) -> Path:
    host = "".join(c if c.isalnum() else "-" for c in platform.node())[:40] or "host"
    return env.cache_dir() / "peaks" / f"{host}-{fingerprint(target, threads)}.json"


def cache_note() -> str:
    """What becomes of peaks measured now: 'once: cached', or why every run measures them."""
    problem = env.cache_problem()
    return "once: cached" if problem is None else f"every run: not cached, {problem}"


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
        files.write_json(path, peaks.to_dict())
    except OSError:
        pass  # no writable cache: measure again next time


def load_file(path) -> Peaks:
    """User-supplied peaks (TOML or JSON): flops_per_s and bytes_per_s in base units."""
    path = Path(path)
    text = files.read_text(path, "peaks file")
    data = files.parse_json(text, path) if path.suffix == ".json" else files.parse_toml(text, path)
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
    peaks = target.measure_peaks(threads)
    save_cached(peaks, target, threads)
    return peaks




def from_candidates(target: Target, threads: int, flops: dict, nbytes: dict, notes: list,
                    physical_bound: float | None = None, by_dtype: dict | None = None) -> Peaks:
    """The best of each kind of candidate measured on a target (fp32), plus the compute roofs
    of other dtypes (`by_dtype`: dtype -> {method: FLOP/s}; the best of each is kept)."""
    if not flops or not nbytes:
        raise UserError(f"target {target.name}: cannot measure peaks (no kernel could run: "
                        f"{'; '.join(notes) or 'no torch, no numpy'}); give them with --peaks FILE")
    best_flops, best_bytes = max(flops, key=flops.get), max(nbytes, key=nbytes.get)
    return Peaks(
        flops_per_s=flops[best_flops], bytes_per_s=nbytes[best_bytes],
        flops_method=best_flops, bytes_method=best_bytes, source="measured",
        target=target.name, threads=threads, fingerprint=fingerprint(target, threads),
        utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        flops_candidates=flops | {m: v for c in (by_dtype or {}).values() for m, v in c.items()},
        bytes_candidates=nbytes, notes=tuple(notes), physical_bound_flops_per_s=physical_bound,
        flops_by_dtype={d: max(c.values()) for d, c in (by_dtype or {}).items() if c})
