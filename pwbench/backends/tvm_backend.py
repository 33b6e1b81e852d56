"""TVM without tuning: the TOPI compute lowered with no schedule (a serial loop nest, see
tvm_bridge.compiler.compile_untuned), exported as a library that measuring processes load with
TVM's runtime only."""

from __future__ import annotations

import functools
from pathlib import Path

from pwbench.backends.base import Built, NoEvents, Options, Unsupported
from pwbench.tvm_bridge import compiler, runtime
from pwbench.workloads.spec import ConvSpec


class Backend:
    name = "tvm"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        self.options = options
        self.target = target.tvm_target(options.threads)  # a bad TVM target fails before any layer

    def versions(self) -> dict:
        return compiler.versions() | {"tvm_target": compiler.target_string(self.target)}

    def build(self, spec: ConvSpec) -> Built:
        single_convs_only(spec, self.name)
        executable = compiler.compile_untuned(spec, self.target)
        return exported(spec, executable, self.target, self.name, self.options)


def single_convs_only(workload, backend: str) -> None:
    if not isinstance(workload, ConvSpec):
        raise Unsupported(f"{backend} builds single convs (TOPI computes); a {workload.kind} block "
                          "runs on torch, onnxruntime or tvm-relax")


def exported(spec: ConvSpec, executable, target: dict, backend: str, options: Options,
             columns: dict | None = None, **extra) -> Built:
    """A compiled kernel exported into the run's work directory, made in a worker from there."""
    library = Path(options.work_dir) / f"{backend}_{spec.id}.so"
    compiler.export(executable, library)
    return Built(functools.partial(runtime.load_cpu_kernel, spec, str(library), options.threads),
                 columns={"target_string": compiler.target_string(target), **(columns or {})},
                 runtime_env=runtime.RUNTIME_ENV, **extra)
