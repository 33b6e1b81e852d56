"""Targets: where a kernel runs, and what each backend needs to know about it."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pwbench.errors import UserError


@dataclass(frozen=True)
class Target:
    name: str          # what the user typed: "cpu", "x86", "arm", "cuda" or a TVM target string
    family: str        # "cpu" (this host), "arm" (cross, via RPC) or "cuda"
    torch_device: str | None  # None: PyTorch cannot run here
    description: str
    tvm: str | None = None  # a full TVM target string the user gave, else derived by the TVM adapter

    @property
    def is_local_cpu(self) -> bool:
        return self.family == "cpu"


TARGETS = {
    "cpu": Target("cpu", "cpu", "cpu", "the host CPU (x86 or ARM), PyTorch and TVM"),
    "x86": Target("x86", "cpu", "cpu", "the host x86 CPU; TVM derives -mcpu and AVX2/AVX-512 from it"),
    "cuda": Target("cuda", "cuda", "cuda", "NVIDIA GPU 0: PyTorch/cuDNN and TVM CUDA"),
    "arm": Target("arm", "arm", None, "aarch64 board over a TVM RPC tracker"),
}


def resolve(name: str) -> Target:
    if name in TARGETS:
        return TARGETS[name]
    kind = _tvm_kind(name)
    if kind in ("llvm", "cuda"):
        family = "cuda" if kind == "cuda" else "cpu"
        return Target(name, family, family, "a TVM target given in full", tvm=name)
    raise UserError(
        f"unknown target {name!r}: choose one of {', '.join(TARGETS)} or give a TVM target "
        "(e.g. '{\"kind\": \"llvm\", \"mcpu\": \"znver4\"}')"
    )


def require_available(target: Target) -> None:
    """Fail with one clear line when the target's hardware is not here."""
    if target.family == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                "target cuda: no CUDA GPU is visible to PyTorch on this machine; run on a machine "
                "with an NVIDIA GPU and a CUDA build of torch, or use --target cpu"
            )
    if target.family == "arm":
        raise UserError(
            "target arm: measuring on an ARM board needs a TVM RPC tracker, which pwbench does not "
            "support yet; use --target cpu on the board itself"
        )


def _tvm_kind(text: str) -> str:
    """The target kind of a TVM target given as JSON dict or as 'llvm -mcpu=...' text."""
    try:
        spec = json.loads(text)
    except ValueError:
        return text.split()[0] if text.strip() else ""
    return spec.get("kind", "") if isinstance(spec, dict) else ""
