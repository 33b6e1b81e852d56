"""The SQLite history: recording runs, trends across commits, compare --against-history, schema."""

import json
import os
import sqlite3

import pytest

from pwbench.store import history
from runs_helper import META, TINY, pwbench, write_run

pytestmark = pytest.mark.unit


def commit_meta(i: int) -> dict:
    return META | {"git_commit": f"c{i}" * 6, "utc": f"2026-11-2{i}T10:00:00+00:00"}


@pytest.fixture
def db(tmp_path):
    """Three recorded runs of one environment, dw 10 % slower in the third commit."""
    path = tmp_path / "h.sqlite"
    runs = [write_run(tmp_path / f"run{i}", {"dw": 1.1 if i == 3 else 1.0}, seed=i, meta=commit_meta(i))
            for i in (1, 2, 3)]
    proc = pwbench("history", "add", *runs, "--db", path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("recorded as run") == 3
    return path


def test_adding_a_run_twice_records_it_once(db, tmp_path):
    proc = pwbench("history", "--db", db, "add", tmp_path / "run2")
    assert proc.returncode == 0 and "already recorded as run 2" in proc.stdout
    runs = json.loads(pwbench("history", "--db", db, "--format", "json").stdout)
    assert [r["run"] for r in runs] == [1, 2, 3] and {r["rows"] for r in runs} == {4}


def test_trend_of_a_layer_across_commits(db):
    proc = pwbench("history", "--db", db, "--layer", "dw", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    trend = json.loads(proc.stdout)
    assert [t["git_commit"][:2] for t in trend] == ["c1", "c2", "c3"]
    assert trend[0]["vs_first"] == 1 and trend[2]["vs_first"] == pytest.approx(1.1, rel=0.05)
    table = pwbench("history", "--db", db, "--layer", "conv3*")
    assert table.returncode == 0 and "conv3.b" in table.stdout and "c3c3c3c3c3c3" in table.stdout
    assert pwbench("history", "--db", db, "--layer", "nosuch").returncode == 2


def test_compare_against_the_history_of_the_same_fingerprint(db, tmp_path):
    clean = write_run(tmp_path / "clean", {"dw": 1.05}, seed=7, meta=commit_meta(4))
    proc = pwbench("compare", clean, "--against-history", "--db", db, "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["base"].startswith("history (3 run(s) of f00dfeedbeef")
    assert {r["verdict"] for r in result["rows"]} <= {"same", "uncertain"}
    slow = write_run(tmp_path / "slow", {"pw": 1.4}, seed=8, meta=commit_meta(5))
    proc = pwbench("compare", slow, "--against-history", "--db", db, "--history-runs", "2")
    assert proc.returncode == 1 and "slower" in proc.stdout and "2 run(s)" in proc.stdout


def test_a_run_already_recorded_is_not_its_own_baseline(db, tmp_path):
    proc = pwbench("compare", tmp_path / "run3", "--against-history", "--db", db, "--format", "json")
    assert json.loads(proc.stdout)["base"].startswith("history (2 run(s)")


def test_no_comparable_history_is_bad_input(db, tmp_path):
    other = write_run(tmp_path / "other", {}, seed=9, meta=META | {"fingerprint": "0123456789ab"})
    proc = pwbench("compare", other, "--against-history", "--db", db)
    assert proc.returncode == 2 and "no other run with fingerprint 0123456789ab" in proc.stderr


def test_newer_schema_and_foreign_files_are_refused(db, tmp_path):
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {history.SCHEMA_VERSION + 1}")
    proc = pwbench("history", "--db", db)
    assert proc.returncode == 2 and "written by a newer pwbench (history schema 2" in proc.stderr
    text = tmp_path / "notes.txt"
    text.write_text("not a database, but long enough to have a header " * 10)
    proc = pwbench("history", "add", tmp_path / "run1", "--db", text)
    assert proc.returncode == 2 and "not a usable pwbench history database" in proc.stderr
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    proc = pwbench("history", "--db", other)
    assert proc.returncode == 2 and "not a pwbench history" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_record_uses_the_environment_default(tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    db = tmp_path / "env.sqlite"
    os.environ["PWBENCH_HISTORY"] = str(db)
    try:
        proc = pwbench("run", "--suite", suite, "--output", tmp_path / "r", "--record", "--threads", "1",
                       "--warmup-ms", "1", "--sample-ms", "5")
        listed = pwbench("history", "--format", "json")
    finally:
        del os.environ["PWBENCH_HISTORY"]
    assert proc.returncode == 0 and f"recorded in {db} as run 1" in proc.stdout, proc.stderr
    (run,) = json.loads(listed.stdout)
    assert run["suite"] == "tiny" and run["rows"] == 2 and run["run_dir"] == str(tmp_path / "r")
