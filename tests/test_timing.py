import time

import pytest

from pwbench.measure.timing import Budget, Measurement, measure


def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_inner_loop_grows_until_a_block_outlasts_timer_overhead():
    m = measure(lambda: busy(50e-6), Budget(warmup_ms=5, sample_ms=30, min_block_s=2e-3))
    assert m.number >= 2e-3 / 50e-6 / 2  # grown by factors, at least half-way there
    assert len(m.samples_s) >= 7
    assert min(m.samples_s) >= 50e-6  # per-call, never below the work itself


def test_slow_calls_are_sampled_once_each_and_min_samples_hold():
    m = measure(lambda: busy(3e-3), Budget(warmup_ms=0, sample_ms=1, min_samples=5))
    assert m.number == 1 and len(m.samples_s) == 5


def test_sync_runs_after_every_block():
    calls = []
    m = measure(lambda: None, Budget(warmup_ms=0, sample_ms=5, min_samples=3), sync=lambda: calls.append(1))
    assert len(calls) >= len(m.samples_s)


def test_statistics():
    m = Measurement([1.0, 2.0, 3.0, 4.0, 100.0], number=1)
    assert m.median_s == 3.0 and m.min_s == 1.0
    assert m.iqr_s == pytest.approx(2.0)
    assert m.noisy
    assert not Measurement([1.0, 1.01, 1.02, 0.99, 1.0], 1).noisy
