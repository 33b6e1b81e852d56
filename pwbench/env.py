"""Environment metadata, recorded once per run: what a result was measured on and with."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import pwbench

# CPU features that decide which kernels a library or compiler can use
FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                     "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve", "sve2")


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu_model": model, "cpu_flags": [f for f in FLAGS_OF_INTEREST if f in flags],
            "cores": os.cpu_count(), "machine": platform.machine()}


def git_commit() -> str:
    """Commit of the pwbench source tree, with '-dirty' when it has uncommitted changes."""
    root = Path(pwbench.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{commit}-dirty" if commit and dirty else commit


def collect(threads: int) -> dict:
    return {
        "pwbench": pwbench.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        **cpu_info(),
        "threads": threads,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,  # a busy machine?
        "git_commit": git_commit(),
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["pwbench", *sys.argv[1:]]),
    }


def fingerprint(meta: dict) -> str:
    """Short hash of what makes timings comparable: hardware, threads, target, library versions."""
    keys = ("cpu_model", "cores", "machine", "threads", "target", "versions")
    blob = repr([(k, meta.get(k)) for k in keys]).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
