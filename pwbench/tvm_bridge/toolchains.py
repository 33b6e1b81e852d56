"""How kernels for a target are compiled, exported, loaded and measured: the one place that tells
this machine's CPU, the instruction clock's counted CPU, a board behind an RPC tracker and an
NVIDIA GPU apart. A target (pwbench/targets) chooses its toolchain; backends, the tuner and
`pwbench build` ask it and never which family the target is.

A toolchain turns a module into an `Artifact` (kernel.py: library, entry point, layout) and
gives the picklable maker that loads that artifact where the kernel runs, the clock it brings,
and, for tuning, the builder step (compile and export one candidate) and the runner that
measures candidates where the target's kernels run.
"""

from __future__ import annotations

import functools
from pathlib import Path

import tvm

from pwbench.tvm_bridge import board, ffi_kernel, runtime, tvm_targets
from pwbench.tvm_bridge.kernel import Artifact, Compiled


class Toolchain:
    """This machine's CPU: compiled by LLVM here, run by TVM's runtime in worker processes."""

    device = "cpu"
    clock = "host"  # the clock its kernels bring (measure/clocks.py)
    runtime_env = runtime.RUNTIME_ENV  # what a measuring process sets before `import tvm`
    structured = True  # the structured spaces (a CPU's vector unit) apply
    columns: dict = {}  # extra row columns of every kernel it makes

    def __init__(self, target: dict, threads: int, measure_problem: str | None = None):
        self.target, self.threads = target, threads
        self.measure_problem = measure_problem  # why candidates cannot be measured here, if so

    @property
    def intrinsics(self) -> tuple[str, ...]:
        """The tensor intrinsics its design spaces look up (besides x86's)."""
        return ("arm_cpu",) if str(self.target.get("mtriple", "")).startswith("aarch64") else ()

    def versions(self) -> dict:
        return {"tvm": tvm_targets.VERSION, "tvm_target": tvm_targets.target_string(self.target)}

    # ---- compile and export ---------------------------------------------------------------
    def compile(self, mod) -> Compiled:
        """A scheduled module (or an unscheduled one: TVM's default lowering)."""
        return Compiled(tvm.compile(mod, target=tvm.target.Target(self.target)))

    def compile_untuned(self, func) -> Compiled:
        """What `tvm` without tuning means on this hardware (a CPU: the PrimFunc with no
        schedule, a serial loop nest)."""
        return self.compile(tvm.IRModule({"main": func}))

    def compile_candidate(self, mod):
        """A tuning candidate's executable (the tuner's builder step)."""
        return self.compile(mod).executable

    def export(self, executable, path) -> Path:
        """A library TVM's runtime alone can load on the target."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        executable.export_library(str(path))
        return Path(path)

    def artifact(self, workload, compiled: Compiled, path, layout, convention: str = "dps") -> Artifact:
        self.export(compiled.executable, path)
        return Artifact(workload, str(path), layout, self.device, convention=convention)

    # ---- load and measure -------------------------------------------------------------------
    def make(self, artifact: Artifact):
        """Built.make: loads the artifact in a measuring process (picklable)."""
        return functools.partial(runtime.load, artifact, self.threads)

    def runner(self, ms, evaluator, threads: int):
        """MetaSchedule's runner for tuning candidates: one worker process here."""
        return ms.runner.LocalRunner(timeout_sec=60, evaluator_config=evaluator)


class Counted(Toolchain):
    """The instruction clock's CPU (measure/instructions.py): kernels built for the ISA valgrind
    decodes (the target's cap), called through their C entry point with no TVM at all
    (ffi_kernel.py: `import tvm` under valgrind would cost each counting process minutes)."""

    clock = "instructions"
    runtime_env: dict = {}
    columns = {"tvm_call": "__tvm_ffi_main (ctypes)"}

    def make(self, artifact: Artifact):
        if artifact.convention != "dps":
            raise RuntimeError("the instruction clock counts single kernels (a Relax VM program "
                               "needs TVM's runtime, which it does not load)")
        return functools.partial(ffi_kernel.load, artifact, ffi_kernel.helper(), self.clock)


class Board(Toolchain):
    """A board behind an RPC tracker: kernels cross-compiled and linked here (no compiler needed
    there), uploaded and timed on a free board of the key; candidates measured on every board of
    the key (one runner worker each)."""

    clock = "time_evaluator"

    def __init__(self, target: dict, threads: int, endpoint, cross_compiler: str | None):
        super().__init__(target, threads)
        self.endpoint, self.cross_compiler = endpoint, cross_compiler

    def export(self, executable, path) -> Path:
        if self.cross_compiler is None:
            return super().export(executable, path)
        from tvm.support import cc

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        executable.export_library(str(path), fcompile=cc.cross_compiler(self.cross_compiler))
        return Path(path)

    def make(self, artifact: Artifact):
        if artifact.convention != "dps":
            raise RuntimeError("a board runs single kernels over RPC, not Relax VM programs")
        return functools.partial(board.load, artifact, self.threads, self.endpoint)

    def runner(self, ms, evaluator, threads: int):
        from pwbench.tvm_bridge import rpc

        try:
            workers = rpc.boards(self.endpoint)
        except rpc.BoardError as exc:
            raise RuntimeError(str(exc)) from None
        return board.tuning_runner(self.endpoint, threads, evaluator, workers)


class Cuda(Toolchain):
    """An NVIDIA GPU: DLight or tuned schedules compiled by nvcc here, GPU or not (cuda.py);
    kernels run on the GPU by TVM's runtime over torch tensors; candidates are measured only
    where the GPU is (`measure_problem` says why not elsewhere)."""

    device = "cuda"
    clock = "cuda-events"
    structured = False
    intrinsics = ("cuda",)  # the CUDA design space's tensor-core rules look them up

    def __init__(self, target: dict, threads: int, measure_problem: str | None = None,
                 index: int = 0):
        super().__init__(target, threads, measure_problem)
        self.index = index  # the GPU its kernels run on

    def make(self, artifact: Artifact):
        return functools.partial(runtime.load, artifact, self.threads, self.index)

    def versions(self) -> dict:
        from pwbench.toolkits import cuda_toolkit_version

        return super().versions() | {"cuda_toolkit": cuda_toolkit_version()}

    def compile(self, mod) -> Compiled:
        from pwbench.tvm_bridge import cuda

        return cuda.compile_module(mod, self.target)

    def compile_untuned(self, func) -> Compiled:
        """DLight's default rules, as TVM's CUDA pipeline applies them to anything unscheduled
        (the rule that scheduled it is the `dlight_rule` column)."""
        from pwbench.tvm_bridge import cuda

        return cuda.compile_dlight(func, self.target)

    def compile_candidate(self, mod):
        from pwbench.tvm_bridge import cuda

        cuda.enable()
        cuda.NVCC.arch = str(self.target.get("arch", "sm_90"))
        with tvm.target.Target(self.target):
            return tvm.compile(mod, target=tvm.target.Target(self.target))
