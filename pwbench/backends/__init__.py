"""Backend registry. Each backend lives in one module, imported only when it is used, so a missing
optional dependency disables that backend (with the reason shown by `pwbench list backends`)
instead of breaking `import pwbench`.

A backend module provides ``prepare(spec, target) -> kernel`` doing every allocation and
compilation up front; the kernel is a zero-argument callable with:
  load(x, w)   copy logical NCHW input / OIHW weight float32 arrays into the kernel's buffers
  result()     the last output as a logical NCHW NumPy array
  inputs()     the kernel's current input buffers as NumPy (NCHW, OIHW), to catch mutation
  sync         None, or a function that waits for queued device work (called after each timed block)
  exact        False only for algorithms with inexact transforms (Winograd, FFT, TF32)
and ``versions() -> dict`` naming the library versions it measures, for the run metadata.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from pwbench.errors import UserError


@dataclass(frozen=True)
class BackendInfo:
    name: str
    module: str
    requires: tuple[str, ...]
    families: tuple[str, ...]  # target families it can run on
    description: str


REGISTRY: dict[str, BackendInfo] = {}


def register(info: BackendInfo) -> None:
    REGISTRY[info.name] = info


register(BackendInfo("torch", "pwbench.backends.torch_backend", ("torch",), ("cpu", "cuda"),
                     "torch.nn.functional.conv2d (oneDNN on CPU, cuDNN on CUDA); NHWC = channels_last"))
register(BackendInfo("tvm", "pwbench.backends.tvm_backend", ("tvm",), ("cpu",),
                     "Apache TVM, untuned: the TOPI compute with no schedule (serial loop nest)"))
register(BackendInfo("tvm-tuned", "pwbench.backends.tvm_tuned_backend", ("tvm",), ("cpu",),
                     "Apache TVM tuned by MetaSchedule (--trials per layer), reusing tuning databases"))


def unavailable_reason(name: str) -> str | None:
    """None when the backend can be used here, else why not."""
    info = REGISTRY[name]
    missing = [m for m in info.requires if importlib.util.find_spec(m) is None]
    if missing:
        return f"needs {', '.join(missing)}: pip install -e '.[{','.join(missing)}]'"
    return None


def load(name: str, family: str):
    """Import a backend module for a target family, or raise a UserError saying why it cannot be."""
    if name not in REGISTRY:
        raise UserError(f"unknown backend {name!r}: choose from {', '.join(REGISTRY)}")
    info = REGISTRY[name]
    if family not in info.families:
        raise UserError(f"backend {name} does not run on {family} targets (only {', '.join(info.families)})")
    reason = unavailable_reason(name)
    if reason:
        raise UserError(f"backend {name} is unavailable: {reason}")
    return importlib.import_module(info.module)
