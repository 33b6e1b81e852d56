import time

import pytest

from pwbench.measure.clocks import HostClock
from pwbench.measure.timing import Budget, Measurement, measure

pytestmark = pytest.mark.unit


def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_inner_loop_grows_until_a_block_outlasts_timer_overhead():
    m = measure(HostClock(lambda: busy(50e-6)), Budget(warmup_ms=5, sample_ms=30, min_block_s=2e-3))
    assert m.number >= 2e-3 / 50e-6 / 2  # grown by factors, at least half-way there
    assert len(m.samples_s) >= 7 and m.clock == "host"
    assert min(m.samples_s) >= 50e-6  # per-call, never below the work itself


def test_slow_calls_are_sampled_once_each_and_min_samples_hold():
    m = measure(HostClock(lambda: busy(3e-3)), Budget(warmup_ms=0, sample_ms=1, min_samples=5))
    assert m.number == 1 and len(m.samples_s) == 5


def test_sync_runs_after_every_block():
    calls = []
    m = measure(HostClock(lambda: None, sync=lambda: calls.append(1)),
                Budget(warmup_ms=0, sample_ms=5, min_samples=3))
    assert len(calls) >= len(m.samples_s)


class CountingClock:
    """A clock that counts what it is asked to time, and says every call took 1 ms."""
    name = "counting"

    def __init__(self):
        self.asked = []

    def time(self, number):
        self.asked.append(number)
        return number * 1e-3


def test_the_kernel_brings_its_clock_and_cold_evicts_before_every_single_call_sample():
    clock, evictions = CountingClock(), []
    m = measure(clock, Budget(warmup_ms=0, sample_ms=0, min_samples=6), evict=lambda: evictions.append(1))
    assert m.clock == "counting" and m.samples_s == [1e-3] * 6 and m.number == 1
    assert len(evictions) == 6 and clock.asked == [1] * 7  # one warm-up call, then 6 samples


def test_statistics():
    m = Measurement([1.0, 2.0, 3.0, 4.0, 100.0], number=1)
    assert m.median_s == 3.0 and m.min_s == 1.0
    assert m.iqr_s == pytest.approx(2.0)
    assert m.noisy
    assert not Measurement([1.0, 1.01, 1.02, 0.99, 1.0], 1).noisy
