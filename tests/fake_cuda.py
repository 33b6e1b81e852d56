"""A modelled GPU and its host, standing in for torch.cuda in the timing tests (no GPU here).

Time is virtual. The host spends `dispatch_s` on each launch it enqueues (a kernel, a
`_sleep`, a graph replay); the stream runs its work in order, each piece starting no earlier
than the moment it was enqueued and no earlier than the end of the piece before it. An event
is stamped when the stream reaches it: at once on an idle stream, else when the work queued
before it ends. This is what makes real event timings of microsecond kernels wrong: a kernel
shorter than its dispatch leaves the GPU waiting for the host, and the gap lands between the
events.
"""

from __future__ import annotations

import contextlib


class FakeGPU:
    def __init__(self, kernel_s: float, dispatch_s: float, sleep_hz: float = 1.5e9):
        self.kernel_s, self.dispatch_s, self.sleep_hz = kernel_s, dispatch_s, sleep_hz
        self.host = 0.0  # the host's clock
        self.free = 0.0  # when the stream's queued work ends
        self.capturing: list | None = None  # durations recorded by a graph capture
        self.kernels_run = 0
        gpu = self

        class Event:
            def __init__(self, enable_timing: bool = False):
                self.stamp = None

            def record(self):
                self.stamp = max(gpu.host, gpu.free)

            def synchronize(self):
                gpu.host = max(gpu.host, self.stamp)

            def elapsed_time(self, end) -> float:
                return (end.stamp - self.stamp) * 1e3  # milliseconds, as torch

        class CUDAGraph:
            def __init__(self):
                self.durations: list[float] = []

            def replay(self):
                gpu.host += gpu.dispatch_s  # one launch for the whole graph
                gpu.free = max(gpu.host, gpu.free) + sum(self.durations)
                gpu.kernels_run += len(self.durations)

        self.Event, self.CUDAGraph = Event, CUDAGraph

    def _enqueue(self, duration: float) -> None:
        if self.capturing is not None:  # captured, not run
            self.capturing.append(duration)
            return
        self.host += self.dispatch_s
        self.free = max(self.host, self.free) + duration

    def kernel(self) -> None:
        """One call of the kernel under test."""
        self._enqueue(self.kernel_s)
        self.kernels_run += self.capturing is None

    def _sleep(self, cycles: int) -> None:
        self._enqueue(cycles / self.sleep_hz)

    def synchronize(self) -> None:
        self.host = max(self.host, self.free)

    def now(self) -> float:
        return self.host

    @contextlib.contextmanager
    def graph(self, graph):
        self.synchronize()  # torch.cuda.graph synchronizes before capturing
        self.capturing = graph.durations
        try:
            yield
        finally:
            self.capturing = None
