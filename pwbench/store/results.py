"""Run directories, written and read.

A run directory holds meta.json (the environment, once), records.jsonl (one line per kernel and
measuring process, appended and flushed as measured, so a crash or Ctrl-C loses nothing), then,
when the run ends, records.parquet and records.csv: the tidy table, one row per layer and kernel
with the samples of every process pooled. Columns are documented in results/README.md.

Every reader goes through `load_run`: it pools a run that was cut short, fills the columns older
runs lack, and says (in `Run.warnings`) when a run did not complete.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pwbench import files, samples
from pwbench.errors import UserError

SCHEMA_VERSION = 2  # 2: records.jsonl per process, cache / clock / process columns
META, RECORDS, TABLE = "meta.json", "records.jsonl", "records.parquet"
CURVES = "tuning_curves.csv"
# A kernel: the same shape, computed by the same backend on the same target, in the same cache
# state with the same clock. Rows of one kernel pair up in compare; a variant (a layout or
# precision choice a backend records) is part of it.
KERNEL_KEY = ("spec_id", "backend", "target", "variant", "cache", "clock")
DEFAULTS = {"variant": "", "cache": "hot", "clock": "host"}  # what schema-1 runs measured
INVOCATION = "invocation"  # rows of several runs read as one baseline: which run (not on disk)
REQUIRED = ("suite", "layer", "spec_id", "kind", "batch", "in_channels", "out_channels", "height",
            "width", "kernel_size", "stride", "groups", "dtype", "count", "flops", "bytes",
            "intensity", "backend", "target", "threads", "median_s", "check")
NUMERIC = ("batch", "in_channels", "out_channels", "height", "width", "groups", "count", "flops",
           "bytes", "intensity", "threads", "median_s")


def default_dir(suite: str, target: str) -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe_target = "".join(c if c.isalnum() else "-" for c in target)[:40]
    return Path("results") / f"{stamp}_{suite}_{safe_target}"


def failed(row) -> bool:
    """A kernel that should have a time and has none: its check failed, or it could not be
    built, made or run (a `skipped` workload is not the backend's kind: not a failure)."""
    return not was_timed(row) and row["check"] != "skipped"


def was_timed(row) -> bool:
    """The one test of whether a row holds a measurement (a time, or instruction counts under the
    instruction clock): its check let it be measured and it was."""
    if row["check"] not in ("passed", "untrusted"):
        return False
    return not _isnan(row["median_s"]) or not _isnan(_get(row, "instructions"))


def counted(row) -> bool:
    """Whether a row is of the instruction clock (counts per call, no time)."""
    return not _isnan(_get(row, "instructions"))


def _get(row, column):
    try:
        return row[column]
    except (KeyError, IndexError):
        return None


def gflops(flops: int, seconds: float) -> float:
    return flops / seconds / 1e9 if seconds and not math.isnan(seconds) else math.nan


# ---- pooling the processes of one kernel -------------------------------------------------------

_WORST_FIRST = ("failed", "", "untrusted", "passed", "skipped")
_LINE_KEYS = {"layer", "spec_id", "backend", "target", "check", "error", "flops", "samples_s"}


def pool(lines: list[dict]) -> list[dict]:
    """One tidy row per (layer, kernel) from its per-process lines: samples concatenated in
    process order with their process index, statistics derived from the pooled samples. A kernel
    that failed its check in any process counts as failed and keeps no time: a wrong-but-fast
    kernel must never look like a win."""
    groups: dict[tuple, list[dict]] = {}
    for line in lines:
        line = line | {k: v for k, v in DEFAULTS.items() if k not in line}
        groups.setdefault((line["layer"], *(line[k] for k in KERNEL_KEY)), []).append(line)
    return [_pooled(group) for group in groups.values()]


def _flags(group: list[dict]) -> dict:
    """What any process found about its times: throttled clocks, a launch-bound kernel (with
    the median of the processes' host enqueue times), cold samples the hold did not cover."""
    out = {}
    for flag in ("throttled", "launch_bound"):
        if any(flag in r for r in group):
            out[flag] = any(bool(r.get(flag)) for r in group)
    enqueue = [r["host_enqueue_s"] for r in group if not _isnan(r.get("host_enqueue_s"))]
    if enqueue:
        out["host_enqueue_s"] = statistics.median(enqueue)
    if any("cold_unheld_samples" in r for r in group):
        out["cold_unheld_samples"] = sum(r.get("cold_unheld_samples") or 0 for r in group)
    return out


def _pooled(group: list[dict]) -> dict:
    group = sorted(group, key=lambda r: r.get("process", 0))
    check = min((r["check"] for r in group), key=lambda c: _WORST_FIRST.index(c)
                if c in _WORST_FIRST else 0)
    row = dict(next((r for r in group if r["check"] == check), group[0]))
    timed = [r for r in group if r.get("samples_s") or r.get("samples_instructions")] \
        if check != "failed" else []
    pooled = [s for r in timed for s in r.get("samples_s") or []]
    row.update(samples.summary(pooled))
    if any("samples_instructions" in r for r in group):  # the instruction clock: counts per call
        counts = {c: [v for r in timed for v in r.get(f"samples_{c}") or []]
                  for c in samples.COUNT_COLUMNS}
        row |= {f"samples_{c}": v for c, v in counts.items()} | samples.count_summary(counts)
        row["instructions_per_flop"] = (row["instructions"] / row["flops"] if row["flops"]
                                        else math.nan)
    processes = [r.get("process", 0) for r in timed
                 for _ in (r.get("samples_s") or r.get("samples_instructions") or [])]
    row |= {"samples_s": pooled, "samples_process": processes,
            "n_samples": len(processes), "n_processes": len(timed),
            "number": max((r.get("number", 0) for r in timed), default=0),
            "check": check, "error": "; ".join(dict.fromkeys(r["error"] for r in group if r["error"])),
            "gflops": gflops(row["flops"], samples.summary(pooled)["median_s"])}
    row |= _flags(group)
    for column in ("max_abs_err", "max_rel_err"):  # the worst process counts
        values = [r[column] for r in group if not _isnan(r.get(column))]
        row[column] = max(values) if values else math.nan
    row.pop("process", None)
    return row


def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---- writing -----------------------------------------------------------------------------------

class RunWriter:
    def __init__(self, directory: Path, meta: dict):
        self.dir = Path(directory)
        taken = f"{self.dir} already holds a run; choose another --output"
        if os.path.lexists(self.dir / RECORDS):
            raise UserError(taken)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # "x": created here or refused, so two runs started at once never share the file
            self._records = open(self.dir / RECORDS, "x", encoding="utf-8")
            self.meta = {"schema_version": SCHEMA_VERSION, "status": "running", **meta}
            self._write_meta()
        except FileExistsError:
            raise UserError(taken) from None
        except OSError as exc:
            raise UserError(f"cannot write results to {self.dir}: {exc.strerror or exc}; "
                            "choose another --output") from None
        self.lines: list[dict] = []  # per-process lines, as in records.jsonl
        self.rows: list[dict] = []  # the tidy rows, once finished

    def add(self, line: dict) -> None:
        self.lines.append(line)
        try:
            self._records.write(json.dumps(line, allow_nan=True) + "\n")
            self._records.flush()
            os.fsync(self._records.fileno())
        except OSError as exc:  # a full disk, a quota, a vanished mount
            try:  # closed now, so that nothing tries to flush what is left of the line again
                self._records.close()
            except OSError:
                pass
            raise UserError(f"cannot write to {self.dir / RECORDS}: {exc.strerror or exc}; the "
                            f"{len(self.lines) - 1} line(s) measured before are kept there "
                            "(free space, or choose another --output)") from None

    def add_curve(self, rows: list[dict]) -> None:
        """Rows of tuning_curves.csv (a tuned kernel's best latency vs trial and seconds)."""
        if not rows:
            return
        path = self.dir / CURVES
        pd.DataFrame(rows).to_csv(path, mode="a", header=not path.exists(), index=False)

    def finish(self, status: str = "complete", decorate=lambda row: row) -> None:
        """Pool the lines into rows (`decorate` adds derived columns, e.g. the roofline's) and
        write the tables."""
        self._records.close()
        self.rows = [decorate(r) for r in pool(self.lines)]
        self.meta["status"] = status
        self.meta["rows"] = len(self.rows)
        self._write_meta()
        if self.rows:
            write_tables(self.dir, pd.DataFrame(self.rows))

    def _write_meta(self) -> None:
        files.write_json(self.dir / META, self.meta)


def write_tables(directory: Path, frame: pd.DataFrame) -> None:
    frame.to_parquet(directory / TABLE, index=False)
    flat = frame.copy()
    for column in ("samples_s", "samples_process", *(f"samples_{c}" for c in samples.COUNT_COLUMNS)):
        if column in flat:
            flat[column] = flat[column].map(lambda s: " ".join(repr(v) for v in s))
    flat.to_csv(directory / "records.csv", index=False)


# ---- reading -----------------------------------------------------------------------------------

@dataclass
class Run:
    dir: Path
    meta: dict
    records: pd.DataFrame  # tidy rows
    warnings: list[str] = field(default_factory=list)


def load_run(directory) -> Run:
    """A run directory, validated: finished, or cut short (interrupted, stopped by an error, or
    killed while it was running: then its per-process lines are pooled here). Warnings say so,
    and name a records.jsonl line cut short and rows that meta.json counts but the records lack."""
    path = Path(directory)
    meta = _read_meta(path)
    records, warnings = _read_records(path)
    records = checked(path, records)
    warnings = _status_warnings(path, meta) + warnings
    counted = meta.get("rows")
    if isinstance(counted, int) and not isinstance(counted, bool) and counted != len(records):
        warnings.append(f"{path}: meta.json counts {counted} row(s), its records hold "
                        f"{len(records)}: records were lost or changed after the run")
    return Run(path, meta, records, warnings)


def _status_warnings(path: Path, meta: dict) -> list[str]:
    status = meta.get("status", "unknown")
    if status == "complete":
        return []
    what = {"interrupted": "was interrupted (Ctrl-C or SIGTERM)",
            "running": "was cut short (its process was killed before it finished: meta.json "
                       "still says 'running')",
            "failed": f"stopped on an error ({meta.get('error', 'not recorded')})"}
    return [f"{path} {what.get(status, f'has status {status!r}')}: only the kernels it measured "
            "are there"]


TEXT = ("layer", "spec_id", "backend", "target", "check", "error", *DEFAULTS)
SAMPLE_LISTS = ("samples_s", "samples_process", *(f"samples_{c}" for c in samples.COUNT_COLUMNS))


def checked(path: Path, records: pd.DataFrame, required=REQUIRED, numeric=NUMERIC) -> pd.DataFrame:
    """Rows with the columns every reader needs, of the types it needs, or one UserError."""
    if records.empty:
        raise UserError(f"{path} holds no records (the run measured nothing)")
    missing = [c for c in required if c not in records.columns]
    if missing:
        raise UserError(f"{path}: records lack column(s) {', '.join(missing)}; "
                        "not a pwbench run, or written by an incompatible version")
    records = normalize(records)
    if "error" in records:
        records["error"] = records["error"].fillna("")
    for column in (c for c in numeric if c in records):
        values = pd.to_numeric(records[column], errors="coerce")
        bad = values.isna() & records[column].notna()
        _refuse(path, records[column], bad, "not a number")
        records[column] = values
    for column in (c for c in TEXT if c in records):
        _refuse(path, records[column], ~records[column].map(_is_text), "not text")
    for column in (c for c in SAMPLE_LISTS if c in records):
        _refuse(path, records[column], ~records[column].map(_is_numbers), "not a list of numbers")
    if "samples_s" in records:  # times: a log is taken of every one
        _refuse(path, records["samples_s"], ~records["samples_s"].map(_are_times),
                "not a list of positive, finite times")
    return records


def _refuse(path: Path, column: pd.Series, bad: pd.Series, what: str) -> None:
    if bad.any():
        first = int(bad.to_numpy().argmax())
        raise UserError(f"{path}: record {first + 1}: {column.name} is {what} "
                        f"({str(column.iloc[first])[:80]!r})")


def _is_text(value) -> bool:
    return isinstance(value, str)


def _is_numbers(value) -> bool:
    """A list of real numbers (an array from parquet, a list from JSON), or nothing at all."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and (value.size == 0 or value.dtype.kind in "iuf")
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _are_times(value) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    times = np.asarray(value, dtype=float)
    return bool(np.all(np.isfinite(times) & (times > 0)))


def normalize(records: pd.DataFrame) -> pd.DataFrame:
    """Rows of any schema with every kernel-key column: what older runs lacked, they measured
    with the defaults (hot cache, host clock, no variant)."""
    records = records.copy()
    for column, value in DEFAULTS.items():
        records[column] = records[column].fillna(value) if column in records else value
    return records


def _read_meta(path: Path) -> dict:
    if not path.is_dir():
        raise UserError(f"{path} {'is not a directory' if os.path.lexists(path) else 'does not exist'}"
                        "; expected a pwbench run directory")
    if not os.path.lexists(path / META):
        raise UserError(f"{path} is not a pwbench run directory (no {META})")
    meta = files.parse_json(files.read_text(path / META, "run metadata"), path / META)
    if not isinstance(meta, dict):
        raise UserError(f"{path / META}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{path / META}: schema_version is not a number ({version!r})")
    if version > SCHEMA_VERSION:
        raise UserError(f"{path} was written by a newer pwbench (schema {version}); "
                        "upgrade pwbench to read it")
    if not isinstance(meta.get("status", ""), str):
        raise UserError(f"{path / META}: status is not text ({meta['status']!r})")
    return meta


def _read_records(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The tidy rows (records.parquet, else pooled from records.jsonl) and what was cut short."""
    if (path / TABLE).is_file():
        try:
            return pd.read_parquet(path / TABLE), []
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise UserError(f"{path / TABLE}: unreadable: {str(exc)[:200]}") from None
    if not os.path.lexists(path / RECORDS):
        return pd.DataFrame(), []
    text = files.read_text(path / RECORDS, "records file")
    rows, warnings, lines = [], [], text.splitlines()
    for n, line in enumerate(lines, 1):
        try:
            rows.append(_line(json.loads(line), path / RECORDS, n))
        except (ValueError, RecursionError):
            if n < len(lines) or text.endswith("\n"):  # only a crash cuts the last line short
                raise UserError(f"{path / RECORDS}:{n}: malformed record") from None
            warnings.append(f"{path / RECORDS}:{n} is cut short (the run's process died while "
                            "writing it): that measurement is lost")
    if not rows:
        return pd.DataFrame(), warnings
    numeric = [*(c for c in NUMERIC if c != "median_s"), "process", "number"]
    lines = checked(path, pd.DataFrame(rows), [], numeric)
    return pd.DataFrame(pool(lines.to_dict("records"))), warnings


def _line(row, where: Path, n: int) -> dict:
    """One line of records.jsonl: a JSON object with the keys pooling needs."""
    if not isinstance(row, dict):
        raise UserError(f"{where}:{n}: expected a JSON object, got {type(row).__name__}")
    missing = sorted(_LINE_KEYS - set(row))
    if missing:
        raise UserError(f"{where}:{n}: not a pwbench record (no {', '.join(missing)})")
    return row
