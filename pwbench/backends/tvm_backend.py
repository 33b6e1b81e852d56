"""TVM without tuning: the TOPI compute lowered with no schedule (a serial loop nest, see
tvm_adapter.compile_untuned). All TVM calls go through pwbench.tvm_adapter."""

from __future__ import annotations

from pwbench import tvm_adapter
from pwbench.workloads.spec import ConvSpec
from pwbench.targets import Target

_threads = {"n": 1}


def versions() -> dict:
    return tvm_adapter.versions()


def configure(config, target: Target) -> None:
    _threads["n"] = config.threads
    tvm_adapter.target_dict(target, config.threads)  # a bad TVM target fails before any layer


def set_threads(threads: int) -> None:
    _threads["n"] = threads
    tvm_adapter.set_threads(threads)


def prepare(spec: ConvSpec, target: Target):
    kernel = tvm_adapter.compile_untuned(spec, tvm_adapter.target_dict(target, _threads["n"]))
    kernel.columns = {"target_string": kernel.target_string}
    return kernel
