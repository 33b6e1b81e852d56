"""Clocks: how a kernel's calls are timed (or counted) on the hardware it runs on.

A kernel owns its clock (backends/base.py): `kernel.clock.time(number)` returns the seconds that
`number` back-to-back calls take, waited for completion, as that hardware is best timed: host
perf_counter blocks on a CPU, CUDA events on a GPU, TVM's time_evaluator on a remote board
(tvm_bridge/rpc.py), or callgrind's counts under the instruction clock. measure/timing.py decides
how many calls to time and for how long; a clock only times them.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol


class Clock(Protocol):
    name: str  # recorded in the row's `clock` column

    def time(self, number: int) -> float:
        """Seconds for `number` back-to-back calls of the kernel, completed."""


class CudaEventClock:
    """CUDA events recorded on torch's current stream around a block of calls (the kernels
    between them are timed on the GPU, launch gaps included); waits for the end event."""

    name = "cuda-events"

    def __init__(self, fn: Callable[[], object]):
        import torch

        self.fn = fn
        self.start, self.end = (torch.cuda.Event(enable_timing=True) for _ in range(2))

    def time(self, number: int) -> float:
        fn = self.fn
        self.start.record()
        for _ in range(number):
            fn()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3  # elapsed_time is in milliseconds


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
