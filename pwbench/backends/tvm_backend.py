"""TVM without tuning: on a CPU the TOPI compute with no schedule (a serial loop nest); on a GPU
DLight's default rules, recorded per kernel (the target's toolchain decides, tvm_bridge/
toolchains.py). Every TVM backend's kernel is an artifact (tvm_bridge/kernel.py) exported into
the run's work directory and made in a measuring process by the toolchain's loader: this
machine's TVM runtime, a board behind an RPC tracker (timed there by TVM's time_evaluator), or,
under the instruction clock, the kernel's C entry point with no TVM at all."""

from __future__ import annotations

from pathlib import Path

from pwbench.backends.base import Built, NoEvents, Options, Unsupported
from pwbench.tvm_bridge import layouts, topi_conv, tvm_targets
from pwbench.tvm_bridge.kernel import Compiled
from pwbench.workloads.spec import ConvSpec


class Backend:
    name = "tvm"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        self.options = options
        self.toolchain = target.toolchain(options.threads)  # a bad TVM target fails here

    def versions(self) -> dict:
        return self.toolchain.versions()

    def build(self, spec: ConvSpec) -> Built:
        single_convs_only(spec, self.name)
        compiled = self.toolchain.compile_untuned(topi_conv.primfunc(spec))
        return exported(self.toolchain, spec, compiled, layouts.Plain(spec), self.options,
                        self.name)


def single_convs_only(workload, backend: str) -> None:
    if not isinstance(workload, ConvSpec):
        raise Unsupported(f"{backend} builds single convs (TOPI computes); a {workload.kind} block "
                          "runs on torch, onnxruntime or tvm-relax")


def exported(toolchain, workload, compiled: Compiled, layout, options: Options, name: str,
             columns: dict | None = None, convention: str = "dps", **extra) -> Built:
    """A compiled kernel exported into the run's work directory as an artifact, made in a
    measuring process by the toolchain's loader. `name` tells the library apart (backend and
    variant)."""
    library = Path(options.work_dir) / f"{name}_{workload.id}.so"
    artifact = toolchain.artifact(workload, compiled, library, layout, convention)
    columns = {"target_string": tvm_targets.target_string(toolchain.target), **toolchain.columns,
               **compiled.columns, **(columns or {})}
    return Built(toolchain.make(artifact), clock=toolchain.clock, columns=columns,
                 runtime_env=toolchain.runtime_env, artifact=artifact,
                 details={"device": toolchain.device, **compiled.details}, **extra)
