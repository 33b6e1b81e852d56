"""TVM without tuning: the TOPI compute lowered with no schedule (a serial loop nest, see
compiler.compile_untuned). All TVM calls go through pwbench.tvm_bridge.compiler."""

from __future__ import annotations

from pwbench.tvm_bridge import compiler
from pwbench.workloads.spec import ConvSpec
from pwbench.targets import Target

_threads = {"n": 1}


def versions() -> dict:
    return compiler.versions()


def configure(config, target: Target) -> None:
    _threads["n"] = config.threads
    compiler.target_dict(target, config.threads)  # a bad TVM target fails before any layer


def set_threads(threads: int) -> None:
    _threads["n"] = threads
    compiler.set_threads(threads)


def prepare(spec: ConvSpec, target: Target):
    kernel = compiler.compile_untuned(spec, compiler.target_dict(target, _threads["n"]))
    kernel.columns = {"target_string": kernel.target_string}
    return kernel
