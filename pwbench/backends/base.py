"""The backend contract: who computes a workload, and how its kernel is timed.

A backend is a class, one per module, made once per run with the run's target, options and an
event sink (its progress and notes reach the console through `events`, never a module global):

    backend = Backend(target, options, events)
    backend.prepare(specs)             # optional: before any build, with every workload of the run
    built = backend.build(spec)        # in the main process: compile, tune, export; may be slow
                                       # (a list of Built: several variants of one shape)
    kernel = built.make()              # in any process (a measuring worker): allocate, load
    kernel.load(x, w); kernel(); kernel.result()

`build` does every slow and stateful thing once; `Built.make` must be picklable (a module-level
function and plain arguments, e.g. functools.partial) because kernels are made and measured in
worker processes. A kernel owns its clock: `kernel.clock.time(number)` returns the seconds that
`number` back-to-back calls take, waited for completion, as that hardware is best timed (host
perf_counter blocks, CUDA events, TVM's time_evaluator on a remote board). Under the run's
instruction clock (`Options.clock == "instructions"`, measure/instructions.py) a kernel brings an
`InstructionClock` instead: callgrind counts its calls, and the backend may make it differently
for that (a TVM kernel is called through its C entry point, without TVM's runtime).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Protocol, runtime_checkable

import numpy as np

from pwbench.measure.clocks import Clock
from pwbench.workloads.spec import ConvSpec


class Unsupported(Exception):
    """build() raises this for a workload the backend does not compute (a block, for a backend
    of single convs): the run records a `skipped` row saying so and goes on."""


@runtime_checkable
class Kernel(Protocol):
    clock: Clock
    exact: bool  # False only for algorithms with inexact transforms (Winograd, FFT)
    # optional: `compute = "tf32"` when products are formed from TF32-rounded inputs (the random
    # check's tolerance, measure/verify.py); `columns`, a dict of row columns the kernel found out
    # where it runs (e.g. which cuDNN kernels ran), sent back with each process's line

    def load(self, x: np.ndarray, w: np.ndarray) -> None:
        """Copy logical NCHW input / OIHW weight float32 arrays into the kernel's buffers."""

    def __call__(self) -> None:
        """Run the kernel once (asynchronously where the device is)."""

    def result(self) -> np.ndarray:
        """The last output as a logical NCHW array (waits for the device)."""

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """The kernel's current input buffers as logical (NCHW, OIHW) arrays, to catch mutation."""

    # optional: close(), called once the kernel is measured (a board's kernel ends its session,
    # so that the next kernel gets the board)


@dataclass
class Built:
    """What build() returns: a recipe for the kernel, plus what the row and the console get."""
    make: Callable[[], Kernel]  # picklable
    clock: str = "host"  # the name of the clock its kernels bring (recorded; part of the key)
    variant: str = ""  # a choice the backend made that tells two kernels of one shape apart
    columns: dict = field(default_factory=dict)  # extra columns of this backend's rows
    curve: list[dict] = field(default_factory=list)  # tuning-curve rows (tuning_curves.csv)
    notes: list[str] = field(default_factory=list)  # lines for the console, e.g. "tuned now: ..."
    runtime_env: dict = field(default_factory=dict)  # env vars a measuring process needs
    artifact: object = None  # a TVM kernel's tvm_bridge.kernel.Artifact (kernel bundles keep it)
    details: dict = field(default_factory=dict)  # build facts for a bundle's manifest, not rows


@dataclass(frozen=True)
class Options:
    """Run options every backend may use; a backend's own options (e.g. tuning_options.py) ride
    in `extra`, keyed by their class's `group`, and are read with `of`."""
    threads: int = 1
    clock: str = "time"  # "instructions": kernels bring an InstructionClock (the run counts them)
    work_dir: Path | None = None  # where build() may write files for the run (exported libraries)
    extra: Mapping[str, object] = field(default_factory=dict)

    def of(self, cls):
        """This run's options of class `cls` (its defaults when none were given)."""
        return self.extra.get(cls.group) or cls()


class Events(Protocol):
    def progress(self, text: str) -> None:
        """A transient status line (e.g. tuning trials so far)."""

    def note(self, text: str) -> None:
        """A line worth keeping in the console log."""


class NoEvents:
    def progress(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class Backend(Protocol):
    name: ClassVar[str]

    def __init__(self, target, options: Options, events: Events) -> None:
        """Check everything that can fail before the first layer (a bad TVM target, a foreign
        tuning database) and raise UserError with one line."""

    def versions(self) -> dict:
        """The library versions it measures, for the run metadata."""

    def build(self, spec: ConvSpec) -> Built | list[Built]:
        """One kernel, or several that tell themselves apart by `Built.variant`."""

    # optional: prepare(workloads) -> None, called with every workload of the run before the
    # first build (e.g. to tune them all as one task set)
