"""Run directories: per-process lines on disk as measured, pooled into tidy rows, read back by
every consumer through load_run (cut-short runs and older schemas included)."""

import json
import math

import pandas as pd
import pytest

from pwbench.errors import UserError
from pwbench.store import results
from pwbench.store.results import RunWriter, load_run

pytestmark = pytest.mark.unit
KERNEL = {"suite": "s", "spec_id": "k", "kind": "full", "batch": 1, "in_channels": 1,
          "out_channels": 1, "height": 1, "width": 1, "kernel_size": "1", "stride": "1",
          "groups": 1, "dtype": "float32", "count": 1, "flops": 2000, "bytes": 10,
          "intensity": 200.0, "backend": "b", "target": "t", "threads": 1, "median_s": 0.0,
          "error": "", "number": 1}


def line(layer="l1", process=0, samples=(1e-3, 2e-3), check="passed", **extra):
    return KERNEL | {"layer": layer, "process": process, "samples_s": list(samples),
                     "check": check} | extra


def test_lines_are_on_disk_and_readable_before_the_run_ends(tmp_path):
    writer = RunWriter(tmp_path / "run", {"suite": "s"})
    writer.add(line("l1", 0))
    writer.add(line("l1", 1, [3e-3]))
    run = load_run(tmp_path / "run")  # as after a crash: no finish()
    assert run.meta["status"] == "running" and list(run.records["layer"]) == ["l1"]
    assert list(run.records["samples_s"].iloc[0]) == [1e-3, 2e-3, 3e-3]
    assert "cut short" in run.warnings[0]


def test_processes_pool_into_one_row_with_their_indices(tmp_path):
    writer = RunWriter(tmp_path / "run", {"suite": "s"})
    for p, samples in ((1, [5e-3, 7e-3]), (0, [1e-3, 3e-3])):
        writer.add(line("l1", p, samples))
    writer.add(line("l2", 0, [1e-3]))
    writer.finish()
    run = load_run(tmp_path / "run")
    assert run.meta["status"] == "complete" and run.meta["rows"] == 2 and run.warnings == []
    assert run.meta["schema_version"] == results.SCHEMA_VERSION
    first = run.records.iloc[0]
    assert list(first["samples_s"]) == [1e-3, 3e-3, 5e-3, 7e-3]  # process order
    assert list(first["samples_process"]) == [0, 0, 1, 1] and first["n_processes"] == 2
    assert first["median_s"] == pytest.approx(4e-3) and first["gflops"] == pytest.approx(2000 / 4e-3 / 1e9)
    csv = pd.read_csv(tmp_path / "run" / "records.csv")
    assert csv["samples_s"].iloc[1] == "0.001" and csv["samples_process"].iloc[0] == "0 0 1 1"


def test_a_launch_bound_process_flags_the_pooled_row():
    lines = [line(process=0, launch_bound=False, host_enqueue_s=4e-6, cold_unheld_samples=0),
             line(process=1, launch_bound=True, host_enqueue_s=6e-6, cold_unheld_samples=2),
             line(process=2, launch_bound=False, host_enqueue_s=5e-6, cold_unheld_samples=1)]
    (row,) = results.pool(lines)
    assert row["launch_bound"] is True and row["host_enqueue_s"] == 5e-6
    assert row["cold_unheld_samples"] == 3
    (plain,) = results.pool([line(process=0), line(process=1)])  # a CPU clock: no such columns
    assert "launch_bound" not in plain and "host_enqueue_s" not in plain


def test_a_kernel_that_failed_in_any_process_keeps_no_time(tmp_path):
    rows = results.pool([line("l1", 0), line("l1", 1, [], "failed", error="exact inputs: 3 differ",
                                             max_abs_err=2.0)])
    (row,) = rows
    assert row["check"] == "failed" and row["samples_s"] == [] and math.isnan(row["median_s"])
    assert row["error"] == "exact inputs: 3 differ" and row["max_abs_err"] == 2.0
    assert not results.was_timed(row)


def test_was_timed_is_the_one_predicate():
    assert results.was_timed({"check": "passed", "median_s": 1e-3})
    assert results.was_timed({"check": "untrusted", "median_s": 1e-3})
    assert not results.was_timed({"check": "passed", "median_s": math.nan})
    assert not results.was_timed({"check": "", "median_s": math.nan})


def test_truncated_last_line_is_dropped_but_earlier_damage_is_an_error(tmp_path):
    writer = RunWriter(tmp_path / "run", {})
    writer.add(line("l1"))
    with open(tmp_path / "run" / "records.jsonl", "a") as f:
        f.write('{"layer": "l2", "med')
    assert len(load_run(tmp_path / "run").records) == 1
    with open(tmp_path / "run" / "records.jsonl", "a") as f:
        f.write("\n" + json.dumps(line("l3")) + "\n")
    with pytest.raises(UserError, match="records.jsonl:2"):
        load_run(tmp_path / "run")


def test_schema_1_runs_read_with_the_defaults_they_measured_with(tmp_path):
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "meta.json").write_text(json.dumps({"schema_version": 1, "status": "complete"}))
    old = {k: v for k, v in line().items() if k != "process"} | {"median_s": 1.5e-3}
    results.write_tables(run_dir, pd.DataFrame([old]))
    records = load_run(run_dir).records
    assert (records["cache"].iloc[0], records["clock"].iloc[0], records["variant"].iloc[0]) == \
        ("hot", "host", "")


def test_refuses_to_overwrite_a_run_and_unwritable_dirs(tmp_path):
    RunWriter(tmp_path / "run", {})
    with pytest.raises(UserError, match="already holds a run"):
        RunWriter(tmp_path / "run", {})
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write results"):
        RunWriter(tmp_path / "file" / "run", {})


def test_newer_schema_and_non_runs_are_refused(tmp_path):
    with pytest.raises(UserError, match="not a pwbench run"):
        load_run(tmp_path)
    (tmp_path / "meta.json").write_text('{"schema_version": 99}')
    with pytest.raises(UserError, match="newer pwbench"):
        load_run(tmp_path)


def test_two_writers_never_share_one_run_directory(tmp_path):
    """records.jsonl is created exclusively: of two runs started at once into one --output, the
    second is refused instead of appending to the first's lines."""
    first = results.RunWriter(tmp_path / "run", {"suite": "a"})
    with pytest.raises(UserError, match="already holds a run"):
        results.RunWriter(tmp_path / "run", {"suite": "b"})
    first.finish()
