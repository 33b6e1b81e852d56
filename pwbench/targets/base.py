"""What a target is: the hardware kernels are built for and run on, and everything pwbench needs to
know about it. Other modules ask the target; none of them branches on what kind of target it is.

A target says
- whether kernels can be *built* here (`build_problem`) and *run* here (`run_problem`): a CUDA GPU's
  kernels compile on a machine without one; an ARM board's cross-compile and run over RPC;
- what the hardware is (`facts`, for the run metadata) and which of those facts decide whether two
  timings are comparable (`fingerprint_facts`);
- its TVM target (`tvm_target`) and its PyTorch device (`torch_device`, None when torch cannot run
  there);
- how to measure its peaks (`measure_peaks`) and how to make its caches cold (`evict`);
- how a process that measures on it is set up (`prepare_process`: thread counts, before any
  library starts its thread pool), how long a warm-up must at least last (`min_warmup_ms`: a GPU's
  clocks take a while to ramp up), and what its sensors read before and after a kernel is timed
  (`conditions`, `condition_columns`: SM clock, temperature, power; whether clocks throttled);
- which kernels built elsewhere it can run (`kernel_key`, `kernels_problem`: a GPU runs kernel
  bundles built for its arch) and which facts a tuning database is keyed by (`tuning_facts`);
- whether its kernels can be counted by the instruction clock (`counted`: the same target, as
  valgrind runs it, with the ISA capped to what valgrind decodes; measure/instructions.py).
- whether a measuring process can still run kernels after one failed (`device_problem`: a
  sticky CUDA error poisons the process), and whether its kernels can be replayed from CUDA
  graphs (`graph_replay`);
- where its kernels run when not on this machine (`rpc`: a TVM RPC endpoint, targets/board.py),
  which compiler links them (`cross_compiler`), how long one kernel may take before its worker
  is given up (`kernel_timeout_s`), and the same hardware reached through a tracker (`through`).
"""

from __future__ import annotations

import os

from pwbench.errors import UserError


class Target:
    name: str = ""  # what the user typed: "cpu", "cuda", or a TVM target given in full
    description: str = ""
    torch_device: str | None = None  # None: PyTorch does not run kernels on this target
    stacks: frozenset = frozenset()  # software stacks that can target it: "torch", "tvm", ...
    emulated: bool = False  # timings are meaningless (an emulator), numerics still count
    where: str = "this machine"  # where kernels run, in words
    min_warmup_ms: float = 0.0  # the shortest warm-up per kernel that lets this hardware settle
    rpc = None  # a targets.board.Endpoint when kernels run on a board behind an RPC tracker
    cross_compiler: str | None = None  # links kernels for it; None: this machine's compiler
    can_evict: bool = True  # whether `--cache cold` can empty its caches between samples
    kernel_timeout_s: float | None = None  # a worker silent longer on one kernel is killed
    startup_timeout_s: float | None = None  # ... or longer before its first answer, beyond that
    graph_replay: bool = False  # whether --cuda-graphs can replay its kernels

    def through(self, rpc) -> "Target":
        """This hardware on a board reached through a TVM RPC tracker (--rpc-tracker)."""
        raise UserError(f"target {self.name} does not run through a TVM RPC tracker: pwbench "
                        "measures boards' CPUs over RPC (--target cpu, x86, arm or an ARM core)")

    def tvm_target(self, threads: int) -> dict | None:
        """The TVM target (a dict, as TVM 0.27 wants it), or None when TVM cannot build for it."""
        return None

    def toolchain(self, threads: int):
        """How TVM kernels for it are compiled, exported, loaded and measured
        (tvm_bridge/toolchains.py; needs apache-tvm)."""
        raise UserError(f"TVM does not build kernels for target {self.name}")

    def with_arch(self, arch: str) -> Target:
        """The same target, building for another arch (`pwbench build --arch`)."""
        raise UserError(f"target {self.name} has no --arch (it builds for the hardware it names)")

    def counted(self) -> Target:
        """This target as the instruction clock runs it: its kernels counted by callgrind on this
        machine's CPU, built and capped for an ISA that valgrind decodes (the cap in `facts`)."""
        raise UserError(f"--clock instructions counts kernels on this machine's CPU under "
                        f"valgrind; target {self.name} runs them on {self.where}: use --target cpu")

    def build_problem(self) -> str | None:
        """Why kernels cannot be built here, or None when they can."""
        return None

    def run_problem(self) -> str | None:
        """Why kernels cannot run here, or None when they can."""
        return None

    def facts(self) -> dict:
        """The hardware, for the run metadata: flat keys (cpu_model, cores, gpu, ...) and one
        `hardware` line a person reads."""
        return {}

    def fingerprint_facts(self) -> dict:
        """The facts that decide whether two timings are comparable."""
        return {}

    def tuning_facts(self) -> dict:
        """The facts a tuning database is only valid for (besides the TVM target and version);
        a fact that is None here (unknowable on this machine) is taken from the database."""
        return self.fingerprint_facts()

    def kernel_key(self) -> dict:
        """What kernels built for this target are only valid for (e.g. {"arch": "sm_90"}),
        recorded in a kernel bundle's manifest."""
        return {}

    def kernels_problem(self, built_for: dict) -> str | None:
        """Why kernels built for `built_for` (a bundle's kernel_key and toolchain facts) cannot
        run here, or None when they can."""
        mine = self.kernel_key()
        wrong = [f"{k} {built_for.get(k)!r} (here: {v!r})" for k, v in mine.items()
                 if built_for.get(k) != v]
        return f"built for another target: {', '.join(wrong)}" if wrong else None

    def conditions(self) -> dict:
        """Sensor readings worth recording before and after a kernel is timed (flat, numeric)."""
        return {}

    def condition_columns(self, before: dict, after: dict) -> dict:
        """Row columns from the readings around one kernel's timing (e.g. a `throttled` flag)."""
        return {}

    def device_problem(self) -> str | None:
        """Why this process can no longer run kernels on the target (asked in a measuring
        process after each kernel), or None."""
        return None

    def measure_peaks(self, threads: int):
        """Peak FLOP/s and bytes/s measured on this target (a targets.peaks.Peaks)."""
        raise NotImplementedError(f"target {self.name}: peaks cannot be measured")

    def eviction_bytes(self) -> int:
        """Bytes to stream through to evict every cache level (at least twice the largest)."""
        return 0

    def evict(self) -> None:
        """Make the caches cold before a sample (not timed)."""

    def prepare_process(self, threads: int) -> None:
        """Before any library starts a thread pool: the one thread count every backend uses."""
        for var in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
