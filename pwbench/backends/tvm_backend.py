"""TVM without tuning (tvm_bridge.compiler.compile_untuned): on a CPU the TOPI compute with no
schedule (a serial loop nest); on a GPU DLight's default rules, recorded per kernel. Exported as a
library that measuring processes load with TVM's runtime only: on this machine, or, for a target
behind an RPC tracker, uploaded to a board (tvm_bridge/rpc.py) and timed there by TVM's
time_evaluator; under the instruction clock, called through its C entry point with no TVM at all
(tvm_bridge/ffi_kernel.py: `import tvm` under valgrind would cost each counting process minutes)."""

from __future__ import annotations

import functools
from pathlib import Path

from pwbench.backends.base import Built, NoEvents, Options, Unsupported
from pwbench.tvm_bridge import compiler, ffi_kernel, runtime
from pwbench.workloads.spec import ConvSpec


class Backend:
    name = "tvm"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        self.options, self.place = options, target  # place: where kernels are linked for and run
        self.target = target.tvm_target(options.threads)  # a bad TVM target fails before any layer

    def versions(self) -> dict:
        return compiler.versions(self.target) | {"tvm_target": compiler.target_string(self.target)}

    def build(self, spec: ConvSpec) -> Built:
        single_convs_only(spec, self.name)
        return exported(spec, compiler.compile_untuned(spec, self.target), self.target, self.name,
                        self.options, place=self.place)


def single_convs_only(workload, backend: str) -> None:
    if not isinstance(workload, ConvSpec):
        raise Unsupported(f"{backend} builds single convs (TOPI computes); a {workload.kind} block "
                          "runs on torch, onnxruntime or tvm-relax")


def exported(spec: ConvSpec, compiled: compiler.Compiled, target: dict, backend: str,
             options: Options, columns: dict | None = None, place=None, **extra) -> Built:
    """A compiled kernel exported into the run's work directory (linked by the place's cross
    compiler, if it has one), made in a worker from there: loaded here, or on a board of the
    place's RPC endpoint."""
    library = Path(options.work_dir) / f"{backend}_{spec.id}.so"
    compiler.export(compiled.executable, library, getattr(place, "cross_compiler", None))
    device = compiler.device_of(target)
    columns = {"target_string": compiler.target_string(target), **compiled.columns, **(columns or {})}
    details = {"device": device, **compiled.details}
    endpoint = getattr(place, "rpc", None)
    if endpoint is not None:
        from pwbench.tvm_bridge import rpc

        return Built(functools.partial(rpc.load_kernel, spec, str(library), options.threads, endpoint),
                     clock=rpc.CLOCK, columns=columns, runtime_env=rpc.RUNTIME_ENV, library=library,
                     details=details, **extra)
    if options.clock == "instructions" and device == "cpu":
        return Built(functools.partial(ffi_kernel.load_kernel, spec, str(library),
                                       ffi_kernel.helper(), options.clock),
                     clock=options.clock, columns=columns | {"tvm_call": "__tvm_ffi_main (ctypes)"},
                     library=library, details=details, **extra)
    return Built(functools.partial(runtime.load_kernel, spec, str(library), device, options.threads,
                                   getattr(place, "index", 0)),
                 clock=runtime.CLOCKS[device], columns=columns,
                 runtime_env=runtime.RUNTIME_ENV, library=library, details=details, **extra)
