"""The host CPU: kernels are built and run on this machine, in worker processes it starts.

Facts come from py-cpuinfo (brand, family/model/stepping, flags) and Linux sysfs (cache sizes):
"AMD EPYC" alone names Zen 1 to Zen 5 alike, so family, model and the vector extensions are part
of the fingerprint, and the CPU is never assumed."""

from __future__ import annotations

import functools
import json
import os
import platform
from pathlib import Path

from pwbench.errors import UserError
from pwbench.targets.base import Target
from pwbench.targets.eviction import Evictor
from pwbench.toolkits import parse_tvm_target

# CPU features that decide which kernels a library or compiler can use
FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                     "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve", "sve2")
MIN_WORKING_SET = 256 << 20  # STREAM arrays: well above any last-level cache

# The ISA the instruction clock counts, per machine. valgrind 3.19 decodes no AVX-512 (code using
# it dies with SIGILL) and shows every guest the same synthetic CPU (on x86-64 an AVX2 Haswell,
# "Intel Core i7-4910MQ", whatever the host), so libraries that dispatch on CPUID run their AVX2
# code under it on any host. TVM kernels are built for that CPU too (`haswell`: the same code, so
# the same counts, on every x86-64 CI machine), and the libraries' own ISA switches are set to it
# as a guard (they matter where a library would not ask CPUID). aarch64 is not tested: valgrind
# decodes no SVE there, hence a NEON-only target.
COUNTED_ISA = {
    "x86_64": ({"kind": "llvm", "mcpu": "haswell"},
               {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                "ATEN_CPU_CAPABILITY": "avx2"}),
    "aarch64": ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "-sve"]},
                {"ONEDNN_MAX_CPU_ISA": "ADVANCED_SIMD"}),
}


@functools.cache
def cpu_facts() -> dict:
    """This machine's CPU, read once per process."""
    try:
        import cpuinfo

        info = cpuinfo.get_cpu_info()
    except Exception:  # py-cpuinfo missing or confused by an unusual CPU: keep what platform says
        info = {}
    flags = set(info.get("flags", ()))
    model = info.get("brand_raw") or platform.processor() or platform.machine()
    ident = [f"{k} {info[k]}" for k in ("family", "model", "stepping") if k in info]
    return {"cpu_model": model, "cpu_id": ", ".join(ident), "cpu_flags": [
                f for f in FLAGS_OF_INTEREST if f in flags or f.replace("_", "") in flags],
            "cores": os.cpu_count(), "machine": platform.machine(),
            "llc_bytes": last_level_cache_bytes()}


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


def private_cache_bytes() -> int:
    """One core's own data caches (L1d and L2 where the last level is shared), 2 MiB if unknown."""
    sizes = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index[0-9]*"):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            sizes[int((index / "level").read_text())] = _parse_size((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
    private = [size for level, size in sizes.items() if level < max(sizes, default=0)]
    return sum(private) or 2 << 20


def _parse_size(text: str) -> int:
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text.rstrip("KMGkmg")) * scale


def memory_bytes() -> int | None:
    """Physical memory of this machine, None when unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class HostCPU(Target):
    torch_device = "cpu"
    # onnxruntime: its CPU execution provider; tvm-relax: Relax VM programs loaded on this CPU
    # (GPU and board targets would need their own schedules and loaders: not built yet)
    stacks = frozenset({"torch", "tvm", "onnxruntime", "tvm-relax"})

    def __init__(self, name: str = "cpu", tvm_given: str | None = None,
                 description: str = "the host CPU (x86 or ARM): PyTorch and TVM, built and run here",
                 isa_cap: tuple | None = None):
        self.name, self.description, self.tvm_given = name, description, tvm_given
        self.isa_cap = isa_cap  # (TVM target, env): under the instruction clock only
        self._evictor = None  # made in the measuring process at its first eviction

    def __getstate__(self):  # a target travels to worker processes; its evictor's threads do not
        return self.__dict__ | {"_evictor": None}

    def counted(self) -> HostCPU:
        cap = COUNTED_ISA.get(platform.machine())
        if cap is None:
            raise UserError(f"--clock instructions knows no valgrind-safe ISA for a "
                            f"{platform.machine()} CPU (known: {', '.join(COUNTED_ISA)})")
        return HostCPU(self.name, self.tvm_given, self.description, cap)

    def through(self, rpc) -> Target:
        """A remote box's CPU: its TVM target from what the board says it is (or the one given)."""
        from pwbench.targets.board import Board

        spec = parse_tvm_target(self.tvm_given) if self.tvm_given else None
        return Board(self.name, spec, rpc, wants="x86_64" if self.name == "x86" else None,
                     description="a remote CPU through a TVM RPC tracker")

    def tvm_target(self, threads: int) -> dict:
        from pwbench.tvm_bridge import tvm_targets  # LLVM names this CPU; TVM only when asked

        # capped: the cap's target, canonical as if given in full (a run timing the same kernels
        # gives it with --target and gets the same target string and tuning database); a target
        # given in full stays the user's choice
        given = json.dumps(self.isa_cap[0]) if self.isa_cap and not self.tvm_given else None
        return tvm_targets.cpu_target(given or self.tvm_given, threads, self.name)

    def toolchain(self, threads: int):
        """This CPU's, or under the instruction clock the counted one (kernels called through
        their C entry point, built for the capped ISA)."""
        from pwbench.tvm_bridge import toolchains

        chosen = toolchains.Counted if self.isa_cap else toolchains.Toolchain
        return chosen(self.tvm_target(threads), threads)

    def facts(self) -> dict:
        f = cpu_facts()
        vectors = next((v for v in ("avx512f", "avx2", "sve", "asimd") if v in f["cpu_flags"]), "")
        line = f"{f['cpu_model']} ({f['cpu_id']}), {f['cores']} cores, {vectors or 'no SIMD flags'}"
        return {**f, "hardware": line, **self._cap_facts()}

    def fingerprint_facts(self) -> dict:
        f = cpu_facts()
        return {**{k: f[k] for k in ("cpu_model", "cpu_id", "cpu_flags", "cores", "machine")},
                **self._cap_facts()}

    def tuning_facts(self) -> dict:
        """A tuning database holds schedules for a TVM target (in its fingerprint) on this CPU:
        the libraries' caps do not change them."""
        return {k: v for k, v in self.fingerprint_facts().items() if k != "isa_cap"}

    def _cap_facts(self) -> dict:
        if not self.isa_cap:
            return {}
        tvm = self.tvm_given or json.dumps(self.isa_cap[0], sort_keys=True)
        return {"isa_cap": {"tvm_target": tvm, "env": dict(self.isa_cap[1])}}

    def prepare_process(self, threads: int) -> None:
        super().prepare_process(threads)
        if self.isa_cap:  # numpy's BLAS threads would spin inside a counted window, too
            os.environ.update({**self.isa_cap[1], "OPENBLAS_NUM_THREADS": str(threads)})

    def kernel_key(self) -> dict:
        """Kernels are compiled for this CPU's model (LLVM -mcpu and its vector extensions)."""
        f = cpu_facts()
        return {"cpu_model": f["cpu_model"], "machine": f["machine"]}

    def measure_peaks(self, threads: int):
        from pwbench.targets import peak_kernels, peaks

        notes = _load_note()
        flags = cpu_facts()["cpu_flags"]
        flops = peak_kernels.gemm("cpu", threads, notes) | peak_kernels.fma(threads, flags, notes)
        working_set = max(4 * last_level_cache_bytes(), MIN_WORKING_SET)
        working_set = min(working_set, (memory_bytes() or working_set * 4) // 4)
        nbytes = peak_kernels.bandwidth("cpu", threads, working_set, notes)
        bound = peaks.physical_flops_bound(flags, cpu_facts()["cores"])
        return peaks.from_candidates(self, threads, flops, nbytes, notes, bound)

    def eviction_bytes(self) -> int:
        return 2 * last_level_cache_bytes()

    def evict(self) -> None:
        """Stream buffers of twice the last-level cache in all through every level (read and
        write), from every core the kernel's threads may use (targets/eviction.py)."""
        if self._evictor is None:
            self._evictor = Evictor(last_level_cache_bytes(), private_cache_bytes())
        self._evictor()


def _load_note() -> list[str]:
    if not hasattr(os, "getloadavg"):
        return []
    return [f"1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores when "
            "measured"]
