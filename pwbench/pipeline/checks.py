"""What a run checks before anything is measured (runner.plan): the settings its clock implies
or refuses, a kernel bundle's fixed layers, memory, threads, and which default backends can take
part. Each problem is one line (UserError), each doubt a warning printed before the run."""

from __future__ import annotations

import os
from dataclasses import replace

from pwbench import backends
from pwbench.errors import UserError
from pwbench.measure import instructions
from pwbench.targets.host import memory_bytes
from pwbench.workloads.spec import ConvSpec

DEFAULT_PROCESSES = 3  # the fewest false alarms in A/A runs on a 2-core VM: README, Regression tracking
MAX_THREADS = 256  # or 16 per core: thread pools beyond that fail (torch's GEMM segfaulted)
CLOCKS = ("time", "instructions")  # time: the clock each kernel brings (host, cuda-events)


def hardware_warnings(config, target) -> list[str]:
    """More threads than cores, an emulated board; far more threads than cores is refused."""
    warnings, cores = [], target.facts().get("cores") or os.cpu_count() or 1
    if config.threads > max(MAX_THREADS, 16 * cores):  # OpenMP's pool segfaulted at 100,000
        raise UserError(f"--threads {config.threads} is far more than {target.where}'s {cores} "
                        f"cores (at most {max(MAX_THREADS, 16 * cores)}): give --threads {cores}")
    if config.threads > cores:
        warnings.append(f"--threads {config.threads} is more than {target.where}'s {cores} "
                        "cores: threads will share cores and times will be noisy")
    if target.emulated:
        warnings.append(f"target {target.name} is emulated: its times say nothing of real "
                        "hardware (rows are marked emulated); only its numerics count")
    return warnings


def optional_problem(name: str, target) -> str | None:
    """Why a default backend cannot be part of this run (not installed, or not for this target)."""
    reason = backends.unavailable_reason(name)
    if reason:
        return f"is unavailable here ({reason})"
    if backends.REGISTRY[name].stack not in target.stacks:
        return f"does not run on target {target.name}"
    return None


def clock_defaults(config):
    """The settings the clock implies, and the ones it cannot work with, refused in one line."""
    if config.clock not in CLOCKS:
        raise UserError(f"--clock must be one of {', '.join(CLOCKS)}, got {config.clock!r}")
    counted = config.clock == "instructions"
    if config.threads is None:
        config = replace(config, threads=1 if counted else os.cpu_count() or 1)
    if config.processes is None:
        config = replace(config, processes=instructions.DEFAULT_PROCESSES if counted
                         else DEFAULT_PROCESSES)
    if not counted:
        return config
    if config.threads != 1:  # valgrind runs threads one at a time: spin-waits would be counted
        raise UserError(f"--clock instructions counts one thread (valgrind serialises threads, "
                        f"so a thread pool's spin-waits would count): drop --threads "
                        f"{config.threads} or give --threads 1")
    if config.cache != "hot":
        raise UserError("--clock instructions counts hot calls (callgrind's simulated caches "
                        "are not evicted): drop --cache cold")
    if config.kernels is not None:
        raise UserError("--clock instructions builds its kernels for the ISA valgrind decodes: "
                        "it cannot run a kernel bundle built for another")
    if config.calls < 1:
        raise UserError(f"--calls must be at least 1, got {config.calls}")
    return config


def bundle(config):
    """The kernel bundle of --kernels (its layers are fixed: no overrides), or None."""
    if config.kernels is None:
        return None
    from pwbench.store import bundle

    fixed = [o for o in ("batch", "layout", "dtype") if getattr(config, o) is not None]
    if fixed:
        raise UserError(f"--{'/--'.join(fixed)} cannot change the layers of a kernel bundle "
                        "(its kernels are built for fixed shapes): build another bundle")
    return bundle.read(config.kernels)


def check_memory(specs: list[ConvSpec]) -> None:
    """Refuse a layer whose buffers cannot fit, before anything runs: a worker would be killed
    by the kernel's OOM killer, or the machine would swap for hours."""
    available = memory_bytes()
    if not available:
        return
    for spec in {s.id: s for s in specs}.values():
        need = 2 * spec.bytes + spec.reference_bytes
        if need > 0.8 * available:
            raise UserError(f"layer {spec.label} needs about {need / 1e9:.1f} GB (its buffers and "
                            f"float64 references), more than this machine's {available / 1e9:.1f} "
                            "GB allows; lower --batch or --filter it out")
