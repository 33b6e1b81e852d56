"""The history store: an embedded SQLite database of past runs, for trends across commits and for
comparing a new run with the recent history of the same environment fingerprint.

Location: `--db PATH`, else $PWBENCH_HISTORY, else `results/history.sqlite` under the current
directory (beside the run directories; CI keeps it as a cached artifact). The schema version is
SQLite's `user_version`; a database written by a newer pwbench is refused, never altered.
Every record row is kept whole (JSON, raw samples included), so a run read back from the history
compares exactly like its run directory.
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import json
import math
import os
import sqlite3
from pathlib import Path

import pandas as pd

from pwbench.errors import UserError
from pwbench.store import results

SCHEMA_VERSION = 1
DEFAULT_PATH = Path("results") / "history.sqlite"
SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    uid TEXT UNIQUE NOT NULL,        -- hash of meta.json and every record: one run is added once
    run_dir TEXT NOT NULL,
    utc TEXT, git_commit TEXT, fingerprint TEXT, suite TEXT, target TEXT, hostname TEXT,
    meta TEXT NOT NULL,              -- meta.json as recorded
    added_utc TEXT NOT NULL
);
CREATE TABLE records (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    layer TEXT, spec_id TEXT, backend TEXT, target TEXT, median_s REAL, "check" TEXT,
    row TEXT NOT NULL                -- the whole record row as JSON, samples_s included
);
CREATE INDEX records_by_kernel ON records(spec_id, backend, target);
CREATE INDEX runs_by_fingerprint ON runs(fingerprint, utc);
"""


def default_path() -> Path:
    return Path(os.environ.get("PWBENCH_HISTORY") or DEFAULT_PATH)


def connect(path: Path | None = None, create: bool = True) -> sqlite3.Connection:
    path = Path(path or default_path())
    if not os.path.lexists(path) and not create:
        raise UserError(f"no history database at {path}; record runs with 'pwbench history add RUN_DIR' "
                        "or 'pwbench run --record' (or choose one with --db)")
    if os.path.lexists(path) and not path.is_file():  # /dev/null, a directory, a FIFO
        raise UserError(f"{path} is not a file: give --db the path of a history database (it is "
                        "made if it does not exist)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except (sqlite3.Error, OSError) as exc:
        raise UserError(f"{path} is not a usable pwbench history database: {exc}") from None
    if version > SCHEMA_VERSION:
        conn.close()
        raise UserError(f"{path} was written by a newer pwbench (history schema {version}, this one "
                        f"reads up to {SCHEMA_VERSION}); upgrade pwbench or choose another --db")
    if version == 0 and tables:
        conn.close()
        raise UserError(f"{path} is an SQLite database but not a pwbench history; choose another --db")
    if version == 0:
        try:
            with conn:
                conn.executescript(SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            conn.close()
            raise UserError(f"cannot make a history database at {path}: {exc}") from None
    return conn


def run_uid(meta: dict, records: pd.DataFrame) -> str:
    blob = json.dumps(meta, sort_keys=True, default=str) + records.to_json(orient="records")
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def add(conn: sqlite3.Connection, run_dir: Path, warn=lambda text: None) -> tuple[int, bool]:
    """Record a run directory; returns (run id, False when it was already recorded). What is
    wrong with the run (killed, interrupted, a line cut short) is passed to `warn`: it is
    recorded all the same, with what it measured."""
    run = results.load_run(Path(run_dir))
    for warning in run.warnings:
        warn(warning)
    uid = run_uid(run.meta, run.records)
    known = conn.execute("SELECT id FROM runs WHERE uid = ?", (uid,)).fetchone()
    if known:
        return known[0], False
    try:
        return _insert(conn, run, run_dir, uid), True
    except sqlite3.Error as exc:  # read-only, full, locked by another writer
        raise UserError(f"cannot record {run_dir} in the history database: {exc}") from None


def _insert(conn: sqlite3.Connection, run: results.Run, run_dir: Path, uid: str) -> int:
    m = run.meta
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with conn:
        cur = conn.execute(
            "INSERT INTO runs (uid, run_dir, utc, git_commit, fingerprint, suite, target, hostname, "
            "meta, added_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (uid, str(Path(run_dir).resolve()), m.get("utc"), m.get("git_commit"), m.get("fingerprint"),
             m.get("suite"), m.get("target"), m.get("hostname"), json.dumps(m, default=str), now))
        conn.executemany(
            'INSERT INTO records (run_id, layer, spec_id, backend, target, median_s, "check", row) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(cur.lastrowid, r["layer"], r["spec_id"], r["backend"], r["target"],
              _real(r["median_s"]), r["check"], _row_json(r)) for r in _plain_rows(run.records)])
    return cur.lastrowid


def _plain_rows(records: pd.DataFrame) -> list[dict]:
    return json.loads(records.to_json(orient="records"))  # numpy arrays and scalars -> JSON types


def _row_json(row: dict) -> str:
    return json.dumps(row)


def _real(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def runs(conn: sqlite3.Connection) -> pd.DataFrame:
    return pd.read_sql_query(
        "SELECT runs.id AS run, utc, git_commit, suite, runs.target AS target, fingerprint, hostname, "
        "run_dir, "
        "COUNT(records.run_id) AS rows FROM runs LEFT JOIN records ON records.run_id = runs.id "
        "GROUP BY runs.id ORDER BY utc, runs.id", conn)


def trend(conn: sqlite3.Connection, layer: str, backend: str | None = None,
          fingerprint: str | None = None) -> pd.DataFrame:
    """Every recorded time (or instruction count, for rows of the instruction clock) of the layers
    matching `layer` (a glob, or a substring of the layer name or spec id), oldest first, with
    the change against the first run of each kernel and clock. The clock and the count are read
    from each record's JSON (rows older than the instruction clock: clock host, no count)."""
    frame = pd.read_sql_query(
        'SELECT runs.id AS run, utc, git_commit, fingerprint, layer, spec_id, backend, '
        'records.target AS target, '
        "COALESCE(json_extract(row, '$.clock'), 'host') AS clock, median_s, "
        "json_extract(row, '$.instructions') AS instructions, "
        '"check" FROM records JOIN runs ON runs.id = records.run_id '
        "ORDER BY utc, runs.id", conn)
    pattern = layer if any(c in layer for c in "*?[") else f"*{layer}*"
    keep = frame["layer"].map(lambda s: fnmatch.fnmatchcase(s, pattern)) | frame["spec_id"].map(
        lambda s: fnmatch.fnmatchcase(s, pattern))
    if backend:
        keep &= frame["backend"] == backend
    if fingerprint:
        keep &= frame["fingerprint"] == fingerprint
    frame = frame[keep].reset_index(drop=True)
    value = frame["instructions"].astype(float).where(frame["instructions"].notna(),
                                                      frame["median_s"])
    first = value.groupby([frame[c] for c in ("layer", "spec_id", "backend", "target", "clock")]
                          ).transform("first")
    return frame.assign(instructions=frame["instructions"].astype(float), vs_first=value / first)


def baseline(conn: sqlite3.Connection, fingerprint: str, exclude_uid: str, last: int):
    """Records of the `last` recorded runs with this fingerprint (the new run itself excluded), as
    one frame, each row's run id in results.INVOCATION: compare takes each run for an invocation,
    so the spread between runs is inside the interval. A kernel's failed rows are dropped while
    it has a timed one, so one old failure does not mask a new one."""
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM runs WHERE fingerprint = ? AND uid != ? ORDER BY utc DESC, id DESC LIMIT ?",
        (fingerprint, exclude_uid, last))]
    if not ids:
        raise UserError(f"the history has no other run with fingerprint {fingerprint} (same CPU, "
                        "threads, target and library versions); record a baseline first with "
                        "'pwbench history add RUN_DIR'")
    marks = ",".join("?" * len(ids))
    rows = [json.loads(row) | {results.INVOCATION: run} for run, row in conn.execute(
        f"SELECT run_id, row FROM records WHERE run_id IN ({marks}) ORDER BY run_id DESC", ids)]
    where = Path(conn.execute("PRAGMA database_list").fetchone()[2] or "history")
    frame = results.checked(where, pd.DataFrame(rows))
    timed = frame["check"].isin(["passed", "untrusted"])
    key = frame[list(results.KERNEL_KEY)].astype(str).agg("|".join, axis=1)
    keep = timed | ~key.isin(set(key[timed]))
    metas = [json.loads(r[0]) for r in conn.execute(
        f"SELECT meta FROM runs WHERE id IN ({marks}) ORDER BY utc DESC, id DESC", ids)]
    return ids, metas[0], frame[keep].reset_index(drop=True)

