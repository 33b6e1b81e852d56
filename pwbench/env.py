"""The software environment a run records once (versions, commit, time, command), the pwbench
cache directory, and the fingerprint that says which runs are comparable. The hardware is the
target's business (pwbench/targets/)."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import pwbench


def cache_dir() -> Path:
    """$PWBENCH_CACHE_DIR, else $XDG_CACHE_HOME/pwbench, else ~/.cache/pwbench."""
    if os.environ.get("PWBENCH_CACHE_DIR"):
        return Path(os.environ["PWBENCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pwbench"


def cache_problem() -> str | None:
    """Why the cache cannot be written to (a read-only home, a file in its place), else None."""
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"{path} is not writable ({exc.strerror or exc})"
    return None


def writable_dir(name: str) -> Path:
    """`<cache>/name`, or where the cache is read-only, `<tmp>/pwbench-cache-<uid>/name`: for
    files pwbench builds or keeps only for this machine's runs (helper libraries, scratch), so that
    a read-only cache costs a rebuild, never a kernel or a peak left out."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    for root in (cache_dir(), Path(tempfile.gettempdir()) / f"pwbench-cache-{uid}"):
        path = root / name
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK | os.X_OK):
            return path
    return path  # neither is writable: the caller's write says so


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


# Environment variables that change how the libraries' thread pools behave: OpenMP's wait policy
# alone moves a 2-thread torch conv by 10x on a loaded 2-core VM (scripts/thread_study.py).
THREAD_ENV_PREFIXES = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "TVM_NUM_THREADS", "ONEDNN_",
                       "DNNL_")


def thread_env() -> dict:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(THREAD_ENV_PREFIXES)}


def collect(threads: int) -> dict:
    return {
        "pwbench": pwbench.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "threads": threads,
        "thread_env": thread_env(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,  # a busy machine?
        "git_commit": git_commit(),
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["pwbench", *sys.argv[1:]]),
    }


def fingerprint(facts: dict) -> str:
    """Short hash of what makes timings comparable: the target's fingerprint facts, threads, target
    name, library versions (whichever of them `facts` holds)."""
    blob = repr(sorted((k, repr(v)) for k, v in facts.items())).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
