"""TVM without tuning: the TOPI compute lowered with no schedule (a serial loop nest, see
tvm_bridge.compiler.compile_untuned), exported as a library that measuring processes load with
TVM's runtime only: on this machine, or, for a target behind an RPC tracker, uploaded to a board
(tvm_bridge/rpc.py) and timed there by TVM's time_evaluator."""

from __future__ import annotations

import functools
from pathlib import Path

from pwbench.backends.base import Built, NoEvents, Options, Unsupported
from pwbench.tvm_bridge import compiler, runtime
from pwbench.workloads.spec import ConvSpec


class Backend:
    name = "tvm"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        self.options, self.place = options, target  # place: where kernels are linked for and run
        self.target = target.tvm_target(options.threads)  # a bad TVM target fails before any layer

    def versions(self) -> dict:
        return compiler.versions() | {"tvm_target": compiler.target_string(self.target)}

    def build(self, spec: ConvSpec) -> Built:
        single_convs_only(spec, self.name)
        executable = compiler.compile_untuned(spec, self.target)
        return exported(spec, executable, self.target, self.name, self.options, place=self.place)


def single_convs_only(workload, backend: str) -> None:
    if not isinstance(workload, ConvSpec):
        raise Unsupported(f"{backend} builds single convs (TOPI computes); a {workload.kind} block "
                          "runs on torch, onnxruntime or tvm-relax")


def exported(spec: ConvSpec, executable, target: dict, backend: str, options: Options,
             columns: dict | None = None, place=None, **extra) -> Built:
    """A compiled kernel exported into the run's work directory (linked by the place's cross
    compiler, if it has one), made in a worker from there: loaded here, or on a board of the
    place's RPC endpoint."""
    library = Path(options.work_dir) / f"{backend}_{spec.id}.so"
    compiler.export(executable, library, getattr(place, "cross_compiler", None))
    columns = {"target_string": compiler.target_string(target), **(columns or {})}
    endpoint = getattr(place, "rpc", None)
    if endpoint is not None:
        from pwbench.tvm_bridge import rpc

        return Built(functools.partial(rpc.load_kernel, spec, str(library), options.threads, endpoint),
                     clock=rpc.CLOCK, columns=columns, runtime_env=rpc.RUNTIME_ENV, **extra)
    return Built(functools.partial(runtime.load_cpu_kernel, spec, str(library), options.threads),
                 columns=columns, runtime_env=runtime.RUNTIME_ENV, **extra)
