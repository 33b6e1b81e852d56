"""GPU timing on a modelled GPU (tests/fake_cuda.py: virtual time, a host that spends its
dispatch on each launch, a stream that runs work in order): what CUDA events measure for a
kernel shorter than its dispatch, and what pwbench does about it. The launch-bound flag, cold
samples behind a held stream, CUDA-graph replay. The model is the arithmetic of a real stream;
whether a real H100 agrees is the prepared check's probe (scripts/gpu_check.py)."""

from __future__ import annotations

import contextlib

import pytest

from fake_cuda import FakeGPU
from pwbench.measure import clocks, timing

pytestmark = pytest.mark.unit
US = 1e-6
FAST = timing.Budget(warmup_ms=1, sample_ms=5, min_samples=7, max_samples=40)


def event_clock(gpu: FakeGPU) -> clocks.CudaEventClock:
    return clocks.CudaEventClock(gpu.kernel, cuda=gpu, now=gpu.now)


def test_a_block_of_a_kernel_shorter_than_its_dispatch_times_the_dispatch_and_is_flagged():
    gpu = FakeGPU(kernel_s=2 * US, dispatch_s=10 * US)
    m = timing.measure(event_clock(gpu), FAST)
    assert m.median_s == pytest.approx(10 * US, rel=0.01)  # the host's pace, not the kernel's
    columns = m.columns()
    assert columns["host_enqueue_s"] == pytest.approx(10 * US, rel=0.01)
    assert columns["launch_bound"] is True


def test_a_kernel_longer_than_its_dispatch_is_timed_and_not_flagged():
    gpu = FakeGPU(kernel_s=500 * US, dispatch_s=10 * US)
    m = timing.measure(event_clock(gpu), FAST)
    assert m.median_s == pytest.approx(500 * US, rel=0.02)
    assert m.columns()["launch_bound"] is False
    assert m.columns()["host_enqueue_s"] == pytest.approx(10 * US, rel=0.01)


def test_cuda_graph_replay_times_the_kernel_and_captures_once_per_block_size():
    gpu = FakeGPU(kernel_s=2 * US, dispatch_s=10 * US)
    captured = []

    @contextlib.contextmanager
    def capture():  # a TVM kernel's capture_stream: entered inside the capture
        captured.append(gpu.capturing is not None)
        yield

    clock = clocks.CudaGraphClock(gpu.kernel, capture, cuda=gpu, now=gpu.now)
    m = timing.measure(clock, FAST)
    assert m.clock == "cuda-graph" and m.number > 100
    assert m.median_s == pytest.approx(2 * US, rel=0.05)  # the kernel, one launch per block
    assert m.columns()["launch_bound"] is False
    assert captured and all(captured)  # the kernel launched on the capture stream
    assert len(clock.graphs) == len(captured)  # each block size captured once, then replayed


def test_cold_samples_behind_a_held_stream_exclude_the_dispatch():
    gpu = FakeGPU(kernel_s=5 * US, dispatch_s=20 * US)
    clock = event_clock(gpu)
    gpu.synchronize()  # as after an eviction: the stream is idle when the start event is recorded
    idle = clock.time(1)
    assert idle == pytest.approx(25 * US)  # dispatch + kernel: what a plain cold sample holds
    gpu.synchronize()
    assert clock.time_cold() == pytest.approx(5 * US)
    assert clock.columns() == {"cold_hold_s": clocks.StreamHold.HOLD_S, "cold_unheld_samples": 0}


def test_a_hold_shorter_than_the_dispatch_is_counted_and_lengthened():
    gpu = FakeGPU(kernel_s=5 * US, dispatch_s=300 * US)  # a host far slower than the hold
    clock = event_clock(gpu)
    samples = []
    for _ in range(4):
        gpu.synchronize()
        samples.append(clock.time_cold())
    columns = clock.columns()
    assert columns["cold_unheld_samples"] >= 1 and columns["cold_hold_s"] > 600 * US
    assert samples[-1] == pytest.approx(5 * US)  # once the hold outlasts the dispatch


def test_measure_cold_asks_the_clock_for_held_samples():
    gpu = FakeGPU(kernel_s=5 * US, dispatch_s=20 * US)
    m = timing.measure(event_clock(gpu), FAST, evict=gpu.synchronize)
    assert m.number == 1 and m.median_s == pytest.approx(5 * US)
    assert m.columns()["cold_unheld_samples"] == 0


def test_only_kernels_timed_with_cuda_events_can_be_graphed():
    class HostKernel:
        clock = clocks.HostClock(lambda: None)

    with pytest.raises(RuntimeError, match="--cuda-graphs replays CUDA kernels"):
        clocks.graphed(HostKernel())
    gpu = FakeGPU(kernel_s=1 * US, dispatch_s=1 * US)

    class GpuKernel:
        clock = event_clock(gpu)

    assert clocks.graphed(GpuKernel()).name == "cuda-graph"


def test_a_host_clock_reports_no_launch_columns():
    m = timing.measure(clocks.HostClock(lambda: None), FAST)
    assert m.columns() == {}
