"""Small C helper libraries, built once with the system C compiler and cached.

pwbench needs a few lines of C where Python cannot reach: callgrind's client requests are magic
instruction sequences (measure/instructions.py), and calling an exported TVM kernel without TVM's
runtime needs the functions the kernel imports (tvm_bridge/ffi_kernel.py). Each is built in the
main process, before any worker starts, into the pwbench cache directory under a name that hashes
the source, the flags and the compiler, so a changed source or compiler builds a new file and
workers only load it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from pwbench import env


class BuildError(RuntimeError):
    """No C compiler, or it rejected the source (the message says which)."""


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def library(name: str, source: str, flags: tuple[str, ...] = ()) -> Path:
    """The shared library built from `source` (cached: built at most once per source and flags)."""
    cc = compiler()
    if not cc:
        raise BuildError("no C compiler (cc) on PATH")
    flags = ("-O2", "-shared", "-fPIC", *flags)
    key = hashlib.sha256(repr((source, flags, cc, platform.machine())).encode()).hexdigest()[:16]
    built = env.writable_dir("native") / f"{name}-{key}.so"
    if built.exists():
        return built
    built.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
        src.write_text(source)
        done = subprocess.run([cc, *flags, str(src), "-o", str(out)], capture_output=True,
                              text=True, timeout=120)
        if done.returncode:
            raise BuildError(f"{Path(cc).name} could not build {name}: "
                             f"{done.stderr.strip().splitlines()[0] if done.stderr.strip() else ''}")
        partial = built.with_name(f".{built.name}.{os.getpid()}")
        shutil.copy(out, partial)
        partial.replace(built)  # atomic: a concurrent run never loads half a file
    return built
