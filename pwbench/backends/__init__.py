"""Backend registry. Each backend lives in one module, imported only when it is used, so a missing
optional dependency disables that backend (with the reason shown by `pwbench list backends`)
instead of breaking `import pwbench`. The contract a backend module fulfils (a `Backend` class)
is in backends/base.py."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from pwbench.errors import UserError


@dataclass(frozen=True)
class BackendInfo:
    name: str
    module: str  # "package.module" defining `Backend`, or "package.module:ClassName"
    requires: tuple[str, ...]  # importable modules it needs
    stack: str  # what a target must support for it: "torch", "tvm", "onnxruntime", "tvm-relax"
    description: str

    @property
    def side(self) -> str:
        """"tvm" for TVM's kernels, "library" for a vendor library's (oneDNN, MLAS, cuDNN): the
        two sides of pwbench's speedup tables."""
        return "tvm" if self.stack.startswith("tvm") else "library"


REGISTRY: dict[str, BackendInfo] = {}


def register(info: BackendInfo) -> None:
    REGISTRY[info.name] = info


register(BackendInfo("torch", "pwbench.backends.torch_backend", ("torch",), "torch",
                     "torch.nn.functional.conv2d (oneDNN on CPU, cuDNN on CUDA); NHWC = channels_last"))
register(BackendInfo("torch-frozen", "pwbench.backends.torch_frozen_backend", ("torch",), "torch",
                     "torch for CPU inference: weight pre-packed once for oneDNN (what torch.compile "
                     "with freezing calls), NCHW or channels_last in and out"))
register(BackendInfo("tvm", "pwbench.backends.tvm_backend", ("tvm",), "tvm",
                     "Apache TVM, untuned: the TOPI compute with no schedule (serial loop nest)"))
register(BackendInfo("tvm-tuned", "pwbench.backends.tvm_tuned_backend", ("tvm",), "tvm",
                     "Apache TVM tuned by MetaSchedule (--trials per layer, --space structured or "
                     "default, --tuning suite or layer), reusing tuning databases"))
# Whole graphs (blocks, and single convs for their fusion gain), from the workload's ONNX export:
register(BackendInfo("onnxruntime", "pwbench.backends.onnxruntime_backend",
                     ("onnxruntime", "onnx", "torch"), "onnxruntime",
                     "onnxruntime CPU session of the ONNX export: graph optimizations on (conv + "
                     "bias + activation fused, weights packed once), --threads intra-op threads, "
                     "sequential"))
register(BackendInfo("tvm-relax", "pwbench.backends.tvm_relax_backend", ("tvm", "onnx", "torch"),
                     "tvm-relax",
                     "Apache TVM Relax, untuned: from_onnx + tvm.compile, whose CPU pipeline "
                     "legalizes each op to its TOPI loop nest with no fusion and no schedule "
                     "(serial, one thread)"))
register(BackendInfo("tvm-relax-tuned", "pwbench.backends.tvm_relax_backend:TunedBackend",
                     ("tvm", "onnx", "torch"), "tvm-relax",
                     "Apache TVM Relax, legalized and fused, each fused PrimFunc tuned by "
                     "MetaSchedule (--trials per task), reusing tuning databases"))

# the optional-dependency group (pyproject extras) that brings each module
EXTRAS = {"onnx": "models", "onnxruntime": "models", "torchvision": "models"}


def unavailable_reason(name: str) -> str | None:
    """None when the backend can be used here, else why not."""
    info = REGISTRY[name]
    missing = [m for m in info.requires if importlib.util.find_spec(m) is None]
    if missing:
        extras = dict.fromkeys(EXTRAS.get(m, m) for m in missing)
        return f"needs {', '.join(missing)}: pip install -e '.[{','.join(extras)}]'"
    return None


def backend_class(name: str, target):
    """The Backend class of a registered backend for a target, or a UserError saying why not."""
    if name not in REGISTRY:
        raise UserError(f"unknown backend {name!r}: choose from {', '.join(REGISTRY)}")
    info = REGISTRY[name]
    if info.stack not in target.stacks:
        raise UserError(f"backend {name} does not run on target {target.name} "
                        f"({target.description})")
    reason = unavailable_reason(name)
    if reason:
        raise UserError(f"backend {name} is unavailable: {reason}")
    module, _, cls = info.module.partition(":")
    return getattr(importlib.import_module(module), cls or "Backend")


def from_bundle(kit, name: str, target, options, events):
    """The backend that runs a kernel bundle's kernels of backend `name` (built elsewhere)."""
    from pwbench.backends import bundle_backend

    return bundle_backend.Backend(target, options, events, kit=kit, name=name)
