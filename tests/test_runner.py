"""The pipeline: a made-up target and kernels with their own clock go through the runner
unchanged; kernels are measured in several processes; crashes and hangs become rows; wrong
kernels are never timed; cold caches are slower than hot."""

import math
import os

import numpy as np
import pytest

import fakes
from pwbench import targets
from pwbench.errors import UserError
from pwbench.measure import timing
from pwbench.pipeline import runner
from pwbench.store import results

pytestmark = pytest.mark.cpu
FAST = timing.Budget(warmup_ms=1, sample_ms=5)
SUITE = """
[[layer]]
name = "a"
in_channels = 4
out_channels = 8
size = 6
[[layer]]
name = "b"
in_channels = 4
out_channels = 8
size = 6
count = 3
[[layer]]
name = "crash.dw"
in_channels = 4
depthwise = true
size = 6
kernel_size = 3
[[layer]]
name = "last"
in_channels = 2
out_channels = 2
size = 4
"""


@pytest.fixture(autouse=True)
def fake_target(monkeypatch, tmp_path):
    monkeypatch.setitem(targets.TARGETS, "fake", fakes.FakeTarget)
    for var in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, "1"))  # plan() sets them: restored after
    monkeypatch.setenv("PWBENCH_CACHE_DIR", str(tmp_path / "cache"))  # its peaks go there


def run(tmp_path, backends=("fake",), processes=1, **config):
    path = tmp_path / "s.toml"
    path.write_text(SUITE)
    config = runner.RunConfig(suite=str(path), target="fake", backends=backends, threads=1,
                              output=tmp_path / "run", budget=FAST, processes=processes,
                              **config)
    return runner.execute(runner.plan(config))


def by_layer(writer):
    return {r["layer"]: r for r in writer.rows}


def test_a_fake_target_and_a_kernel_with_its_own_clock_go_through_unchanged(tmp_path):
    rows = by_layer(run(tmp_path))
    a = rows["a"]
    assert a["check"] == "passed" and a["clock"] == "fake-clock" and a["target"] == "fake"
    assert a["median_s"] == fakes.SECONDS_PER_CALL and a["fake_column"] == 42  # its own columns
    assert a["cache"] == "hot" and a["n_processes"] == 1
    # a recurring shape is measured once and recorded under each name
    assert rows["b"]["samples_s"] == a["samples_s"] and rows["b"]["count"] == 3


def test_every_kernel_is_measured_in_each_process(tmp_path):
    writer = run(tmp_path, processes=3)
    for row in writer.rows:
        assert sorted(set(row["samples_process"])) == [0, 1, 2] and row["n_processes"] == 3
    lines = [line for line in writer.lines if line["layer"] == "a"]
    assert sorted(line["process"] for line in lines) == [0, 1, 2]  # one line per process on disk


def test_a_kernel_that_kills_its_worker_is_an_error_row_and_the_next_is_measured(tmp_path):
    rows = by_layer(run(tmp_path, backends=("fake-crash",), processes=2))
    crashed = rows["crash.dw"]
    assert "worker process died (killed by SIGSEGV)" in crashed["error"]
    assert crashed["check"] == "" and math.isnan(crashed["median_s"])
    assert rows["last"]["check"] == "passed" and rows["last"]["n_processes"] == 2


def test_a_kernel_that_poisons_its_worker_ends_it_and_the_next_is_measured_afresh(tmp_path):
    """A sticky device error (a CUDA illegal address) would fail every later kernel of the
    process: the kernel that left it gets the error row, a new process measures the rest."""
    writer = run(tmp_path, backends=("fake-poison",), processes=2)
    rows = by_layer(writer)
    poisoned = rows["crash.dw"]
    assert poisoned["error"] == "worker process stopped: a sticky fake-device error"
    assert not results.was_timed(poisoned)
    assert len([line for line in writer.lines if line["layer"] == "crash.dw"]) == 1  # not again
    for name in ("a", "last"):  # before it, after it in round 0, and in round 1 (reverse order)
        assert rows[name]["check"] == "passed" and rows[name]["error"] == ""
        assert rows[name]["n_processes"] == 2


def test_a_hung_kernel_is_killed_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "KERNEL_TIMEOUT_S", 3.0)
    rows = by_layer(run(tmp_path, backends=("fake-hang",)))
    assert "no answer within 3 s" in rows["crash.dw"]["error"]
    assert rows["last"]["check"] == "passed"


def test_cold_cache_is_evicted_before_every_sample(tmp_path):
    rows = by_layer(run(tmp_path, cache="cold"))
    assert rows["a"]["cache"] == "cold" and rows["a"]["number"] == 1  # one call per sample
    assert rows["a"]["median_s"] == 3 * fakes.SECONDS_PER_CALL  # every sample after an eviction


def test_cold_is_slower_than_hot_on_a_kernel_whose_data_fits_in_cache():
    kernel, host = fakes.CacheSensitive(), fakes.host()
    budget = timing.Budget(warmup_ms=20, sample_ms=200)
    hot = timing.measure(kernel.clock, budget)
    cold = timing.measure(kernel.clock, budget, evict=host.evict)
    assert cold.median_s > hot.median_s, (cold.median_s, hot.median_s)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing else to evict")
def test_cold_cache_is_evicted_from_every_cpu_a_kernel_may_use():
    """A multi-threaded kernel keeps operands in every core's private L2: each CPU of the mask
    gets a thread of its own, pinned there, that streams its buffer at every eviction."""
    from pwbench.targets.eviction import Evictor

    evict = Evictor(llc_bytes=1 << 20, private_bytes=256 << 10)
    evict()
    mask = os.sched_getaffinity(0)
    assert set(evict.cpus) == mask and evict.pinned == {cpu: {cpu} for cpu in mask}
    assert evict.per_cpu >= 2 * (256 << 10) and os.sched_getaffinity(0) == mask  # ours untouched
    evict()  # and again: the threads wait between evictions


def test_a_wrong_kernel_is_a_failed_row_and_never_timed(tmp_path):
    rows = by_layer(run(tmp_path, backends=("fake-wrong",)))
    assert rows["a"]["check"] == "failed" and "differ" in rows["a"]["error"]
    assert rows["a"]["samples_s"] == [] and math.isnan(rows["a"]["median_s"])  # never timed


def test_a_build_error_is_a_row(tmp_path, monkeypatch):
    def broken(self, spec):
        raise RuntimeError("compiler exploded\nwith a long log\nthe last line says why")

    monkeypatch.setattr(fakes.FakeBackend, "build", broken)
    row = by_layer(run(tmp_path))["a"]
    assert row["error"].startswith("RuntimeError: the last line says why (")
    assert not results.was_timed(row)


@pytest.mark.parametrize("change, message", [
    ({"processes": 0}, "--processes must be at least 1"),
    ({"cache": "lukewarm"}, "--cache must be one of hot, cold"),
    ({"cuda_graphs": True}, "--cuda-graphs replays CUDA kernels; target fake"),
])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        run(tmp_path, **change)
    assert not (tmp_path / "run").exists()


def test_a_layer_too_big_for_memory_is_refused_at_plan_time(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_text("[[layer]]\nin_channels = 4096\nout_channels = 4096\nsize = 1024\nbatch = 64\n")
    with pytest.raises(UserError, match="needs about .* GB .* lower --batch"):
        runner.plan(runner.RunConfig(suite=str(path), target="fake", backends=("fake",)))


def test_more_threads_than_cores_warns(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE)
    plan = runner.plan(runner.RunConfig(suite=str(path), target="fake", backends=("fake",),
                                        threads=(os.cpu_count() or 1) + 1))
    assert any("more than this machine" in w for w in plan.warnings)


def test_pooled_samples_keep_the_per_process_medians():
    from pwbench import samples

    medians = samples.process_medians([1, 2, 3, 10, 20, 30], [0, 0, 0, 1, 1, 1])
    assert np.array_equal(medians, [2, 20])
