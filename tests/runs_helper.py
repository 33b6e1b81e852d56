"""Run directories for the compare/history/export tests: synthetic ones written with RunWriter
(exact, instant) and real ones from the installed `pwbench` (and a deliberately slow backend)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import PWBENCH
from pwbench.store import results

TESTS = Path(__file__).parent
TINY = """
[suite]
description = "compare tests: a pointwise and a depthwise conv"
[[layer]]
name = "pw"
in_channels = 32
out_channels = 64
size = 28
[[layer]]
name = "dw"
in_channels = 64
depthwise = true
size = 28
kernel_size = 3
padding = 1
"""
REAL = ["--threads", "1", "--warmup-ms", "20", "--sample-ms", "100"]
META = {"cpu_model": "Test CPU", "cpu_flags": ["avx2"], "cores": 2, "machine": "x86_64",
        "threads": 1, "target": "cpu", "python": "3.11.7", "hostname": "ci", "load_average": 0.1,
        "git_commit": "abc123", "utc": "2026-11-23T10:00:00+00:00", "suite": "synthetic",
        "versions": {"torch": "2.13.0+cpu"}, "fingerprint": "f00dfeedbeef"}
LAYERS = {  # layer -> spec id; "conv3.b" repeats conv3's shape, as a network does
    "pw": "n1_c32-64_28x28_k1_s1_p0_float32_nchw",
    "dw": "n1_c64-64_28x28_k3_s1_p1_g64_float32_nchw",
    "conv3": "n1_c16-16_14x14_k3_s1_p1_float32_nchw",
    "conv3.b": "n1_c16-16_14x14_k3_s1_p1_float32_nchw",
}


def row(layer: str, samples, check: str = "passed", spec_id: str | None = None) -> dict:
    samples = [float(s) for s in samples]
    timed = bool(samples)
    return {"suite": "synthetic", "layer": layer, "spec_id": spec_id or LAYERS[layer],
            "kind": "full", "batch": 1, "in_channels": 16, "out_channels": 16, "height": 14,
            "width": 14, "kernel_size": "3", "stride": "1", "groups": 1, "dtype": "float32",
            "layout": "NCHW",
            "count": 1, "flops": 1_000_000, "bytes": 10_000, "intensity": 100.0,
            "backend": "torch", "target": "cpu", "threads": 1,
            "median_s": float(np.median(samples)) if timed else float("nan"),
            "iqr_s": 0.0, "min_s": min(samples) if timed else float("nan"),
            "n_samples": len(samples), "number": 1, "samples_s": samples, "check": check,
            "error": "" if check == "passed" else "max_abs_err 1.0 over the bound"}


def write_run(directory: Path, factors: dict[str, float], seed: int, checks=None, meta=None,
              n: int = 30, noise: float = 0.05, processes: int = 1, process_sd: float = 0.0) -> Path:
    """A run of LAYERS measured in `processes` processes; each kernel's samples are 1 ms x factor
    x a per-process offset (lognormal, sd `process_sd`) x per-sample lognormal noise. Rows that
    share a spec id share one measurement, as the runner writes them."""
    rng = np.random.default_rng(seed)
    measured = {}
    writer = results.RunWriter(directory, copy.deepcopy(meta or META))
    for layer, spec_id in LAYERS.items():
        if spec_id not in measured:
            check = (checks or {}).get(layer, "passed")
            measured[spec_id] = []
            for p in range(processes):
                offset = np.exp(rng.normal(0, process_sd)) if process_sd else 1.0
                samples = [] if check == "failed" else 1e-3 * factors.get(layer, 1.0) * offset * \
                    np.exp(rng.normal(0, noise, n // processes))
                measured[spec_id].append(row(layer, samples, check) | {"process": p})
        for line in measured[spec_id]:
            writer.add({**line, "layer": layer})
    writer.finish()
    return directory


def pwbench_command(slow: bool = False) -> list[str]:
    """The installed console script, or (slow=True) the same CLI with backend 'torch' replaced by
    tests/slow_backend.py, which runs every depthwise conv three times."""
    if not slow:
        return [PWBENCH]
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from pwbench import backends as b; "
            "b.register(b.BackendInfo('torch', 'slow_backend', ('torch',), 'torch', 'slow torch')); "
            "from pwbench.cli import main; sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code, str(TESTS)]


def pwbench(*args, slow: bool = False, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*pwbench_command(slow), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def real_run(directory: Path, suite: Path, slow: bool = False, *extra) -> Path:
    proc = pwbench("run", "--suite", suite, "--output", directory, *REAL, *extra, slow=slow)
    assert proc.returncode == 0, proc.stderr
    return directory
