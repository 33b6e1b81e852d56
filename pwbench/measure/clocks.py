"""Clocks: how a kernel's calls are timed (or counted) on the hardware it runs on.

A kernel owns its clock (backends/base.py): `kernel.clock.time(number)` returns the seconds that
`number` back-to-back calls take, waited for completion, as that hardware is best timed: host
perf_counter blocks on a CPU, CUDA events on a GPU, TVM's time_evaluator on a remote board
(tvm_bridge/rpc.py), or callgrind's counts under the instruction clock. measure/timing.py decides
how many calls to time and for how long; a clock only times them.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Protocol


class Clock(Protocol):
    name: str  # recorded in the row's `clock` column

    def time(self, number: int) -> float:
        """Seconds for `number` back-to-back calls of the kernel, completed."""

    # optional, for a clock of a device the host enqueues work to (CudaEventClock):
    # `enqueue_s`, the host seconds the last `time` took to enqueue its block; `time_cold()`, one
    # call after an eviction timed without its dispatch; `columns()`, what the row should know


class CudaEventClock:
    """CUDA events recorded on torch's current stream around a block of calls (the kernels
    between them are timed on the GPU, launch gaps included); waits for the end event.

    It also keeps the host's side of each block: `enqueue_s`, the seconds the host took to
    enqueue it (start event, calls, end event; no waiting). When enqueueing a call takes about as
    long as the GPU runs it, the events time the host's dispatch, not the kernel (the
    `launch_bound` column, measure/timing.py). `time_cold` times one call without its dispatch.
    `cuda` and `now` stand in for torch.cuda and perf_counter in tests (a modelled GPU)."""

    name = "cuda-events"

    def __init__(self, fn: Callable[[], object], cuda=None, now: Callable[[], float] = time.perf_counter):
        if cuda is None:
            import torch

            cuda = torch.cuda
        self.fn, self.cuda, self.now = fn, cuda, now
        self.start, self.end = (cuda.Event(enable_timing=True) for _ in range(2))
        self.enqueue_s = math.nan  # host seconds to enqueue the last timed block
        self.hold: StreamHold | None = None  # made on the first cold sample

    def launch(self, number: int) -> None:
        """Enqueue `number` calls (a CUDA graph replays them instead: CudaGraphClock)."""
        fn = self.fn
        for _ in range(number):
            fn()

    def time(self, number: int) -> float:
        began = self.now()
        self.start.record()
        self.launch(number)
        self.end.record()
        self.enqueue_s = self.now() - began
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3  # elapsed_time is in milliseconds

    def time_cold(self) -> float:
        """One call after an eviction, its dispatch kept out of the sample (nvbench's cold
        measurement): a spinning kernel holds the stream while the host enqueues the start
        event, the call and the end event, so the start event is stamped when the GPU, not the
        host, is ready. A sample whose enqueueing outlasted the hold is counted in
        `hold.unheld` and the hold doubles for the next one."""
        if self.hold is None:
            self.hold = StreamHold(self.cuda, self.now)
        self.hold.begin()
        seconds = self.time(1)
        self.hold.check(self.enqueue_s)
        return seconds

    def columns(self) -> dict:
        """What the clock found out beyond the samples (the cold hold, if one was used)."""
        return self.hold.columns() if self.hold is not None else {}


class StreamHold:
    """Holds torch's current stream with `torch.cuda._sleep` (a kernel that spins for a number of
    GPU cycles), so that what the host enqueues next waits behind it. The cycles per second are
    measured once with events; the hold starts at HOLD_S and doubles whenever the host's
    enqueueing after it took more than half of it (the GPU may then have gone idle first)."""

    HOLD_S = 100e-6  # far above one launch's dispatch (5-30 us)
    CALIBRATION_CYCLES = 10_000_000

    def __init__(self, cuda, now: Callable[[], float]):
        self.cuda, self.now = cuda, now
        start, end = (cuda.Event(enable_timing=True) for _ in range(2))
        cuda.synchronize()
        start.record()
        cuda._sleep(self.CALIBRATION_CYCLES)
        end.record()
        end.synchronize()
        self.cycles_per_s = self.CALIBRATION_CYCLES / (start.elapsed_time(end) / 1e3)
        self.hold_s, self.unheld, self.samples = self.HOLD_S, 0, 0

    def begin(self) -> None:
        self.cuda._sleep(int(self.hold_s * self.cycles_per_s))

    def check(self, enqueue_s: float) -> None:
        self.samples += 1
        if enqueue_s > self.hold_s / 2:
            self.unheld += 1
            self.hold_s *= 2

    def columns(self) -> dict:
        return {"cold_hold_s": self.hold_s, "cold_unheld_samples": self.unheld}


class CudaGraphClock(CudaEventClock):
    """`number` calls captured once into a CUDA graph and replayed as one launch between the
    events (TritonBench's way of timing small kernels): no host dispatch between the kernels.
    `capture` is the kernel's context for capturing (a TVM kernel must launch on torch's capture
    stream, tvm_bridge/runtime.py); the kernel has run before, so lazy set-up is done."""

    name = "cuda-graph"

    def __init__(self, fn: Callable[[], object], capture: Callable[[], object] | None = None,
                 cuda=None, now: Callable[[], float] = time.perf_counter):
        super().__init__(fn, cuda, now)
        self.capture = capture or contextlib.nullcontext
        self.graphs: dict[int, object] = {}

    def launch(self, number: int) -> None:
        graph = self.graphs.get(number)
        if graph is None:
            graph = self.graphs[number] = self.cuda.CUDAGraph()
            with self.cuda.graph(graph), self.capture():
                super().launch(number)
        graph.replay()


def graphed(kernel) -> CudaGraphClock:
    """The kernel's calls replayed from CUDA graphs instead of launched one by one (--cuda-graphs);
    only for a kernel timed with CUDA events."""
    clock = kernel.clock
    if not isinstance(clock, CudaEventClock):
        raise RuntimeError(f"--cuda-graphs replays CUDA kernels; this kernel's clock is {clock.name!r}")
    return CudaGraphClock(clock.fn, getattr(kernel, "capture_stream", None), clock.cuda, clock.now)


class HostClock:
    """perf_counter around a block of calls; `sync` waits for queued device work at its end."""

    name = "host"

    def __init__(self, fn: Callable[[], object], sync: Callable[[], object] | None = None):
        self.fn, self.sync = fn, sync or (lambda: None)

    def time(self, number: int) -> float:
        fn, clock = self.fn, time.perf_counter
        start = clock()
        for _ in range(number):
            fn()
        self.sync()
        return clock() - start


class InstructionClock:
    """Calls counted by callgrind (measure/instructions.py): each call between the client requests
    that zero the counters and dump them. The loop is as lean as it can be, since whatever runs
    between `zero` and `dump` is counted: the tags are made before, the requests are ctypes
    functions called directly."""

    name = "instructions"

    def __init__(self, fn: Callable[[], object]):
        self.fn = fn

    def count(self, zero: Callable[[], object], dump: Callable[[bytes], object],
              tags: list[bytes]) -> None:
        fn = self.fn
        for tag in tags:
            zero()
            fn()
            dump(tag)


def host_clock(fn: Callable[[], object], clock: str = "host"):
    """The clock of a kernel that runs on this machine's CPU: timed, or counted under the run's
    instruction clock."""
    return InstructionClock(fn) if clock == InstructionClock.name else HostClock(fn)


class EvaluatorClock:
    """The device's own timer (TVM's time_evaluator on a board behind an RPC tracker): `timer`
    returns the seconds `number` back-to-back calls took, timed where the kernel runs, so the
    network round trip (15-18 us per call over loopback, more than a small kernel) stays out."""

    name = "time_evaluator"

    def __init__(self, timer: Callable[[int], float]):
        self.timer = timer

    def time(self, number: int) -> float:
        return self.timer(number)
