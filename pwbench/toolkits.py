"""Facts about the tools kernels are built with that need none of those tools' Python packages:
what a TVM target given as text says, and which CUDA toolkit nvcc is. Both targets/ (which
hardware a target names) and tvm_bridge/ (which toolchain builds for it) read them."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess


def parse_tvm_target(text: str) -> dict:
    """A TVM target given as a JSON dict or as 'llvm -mtriple=... -mcpu=...' text, as a dict
    (TVM 0.27 accepts only dicts and tags; {} when the text is neither)."""
    try:
        spec = json.loads(text)
    except ValueError:
        kind, *options = text.split() or [""]
        spec = {"kind": kind}
        for opt in options:
            key, _, value = opt.lstrip("-").partition("=")
            spec[key] = value.split(",") if key == "mattr" else value
    return spec if isinstance(spec, dict) else {}


@functools.cache
def cuda_toolkit_version() -> str | None:
    """The CUDA toolkit release of the nvcc on PATH (e.g. '13.0.88'), None without nvcc."""
    if shutil.which("nvcc") is None:
        return None
    out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"V(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else "unknown"
