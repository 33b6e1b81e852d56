import json

import pandas as pd
import pytest

from pwbench.errors import UserError
from pwbench.store.results import RunWriter, read_run


def row(i):
    return {"layer": f"l{i}", "median_s": 1e-3 * i, "samples_s": [1e-3 * i, 2e-3 * i], "check": "passed"}


def test_rows_are_on_disk_before_the_run_ends(tmp_path):
    writer = RunWriter(tmp_path / "run", {"suite": "s"})
    writer.add(row(1))
    writer.add(row(2))
    meta, frame = read_run(tmp_path / "run")  # as after a crash: no finish()
    assert meta["status"] == "running" and list(frame["layer"]) == ["l1", "l2"]


def test_finish_writes_parquet_and_csv(tmp_path):
    writer = RunWriter(tmp_path / "run", {"suite": "s"})
    for i in (1, 2, 3):
        writer.add(row(i))
    writer.finish()
    meta, frame = read_run(tmp_path / "run")
    assert meta["status"] == "complete" and meta["rows"] == 3 and meta["schema_version"] == 1
    assert list(frame["samples_s"].iloc[2]) == [3e-3, 6e-3]
    csv = pd.read_csv(tmp_path / "run" / "records.csv")
    assert csv["samples_s"].iloc[1] == "0.002 0.004"


def test_truncated_last_line_is_dropped_but_earlier_damage_is_an_error(tmp_path):
    writer = RunWriter(tmp_path / "run", {})
    writer.add(row(1))
    with open(tmp_path / "run" / "records.jsonl", "a") as f:
        f.write('{"layer": "l2", "med')
    assert len(read_run(tmp_path / "run")[1]) == 1
    with open(tmp_path / "run" / "records.jsonl", "a") as f:
        f.write("\n" + json.dumps(row(3)) + "\n")
    with pytest.raises(UserError, match="records.jsonl:2"):
        read_run(tmp_path / "run")


def test_refuses_to_overwrite_a_run_and_unwritable_dirs(tmp_path):
    RunWriter(tmp_path / "run", {})
    with pytest.raises(UserError, match="already holds a run"):
        RunWriter(tmp_path / "run", {})
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write results"):
        RunWriter(tmp_path / "file" / "run", {})


def test_newer_schema_and_non_runs_are_refused(tmp_path):
    with pytest.raises(UserError, match="not a pwbench run"):
        read_run(tmp_path)
    (tmp_path / "meta.json").write_text('{"schema_version": 99}')
    with pytest.raises(UserError, match="newer pwbench"):
        read_run(tmp_path)
