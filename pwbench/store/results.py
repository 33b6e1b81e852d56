"""Run directories: meta.json (environment, once), records.jsonl (one row per measurement,
appended and flushed as measured, so a crash or Ctrl-C loses nothing), then records.parquet and
records.csv when the run ends. Columns are documented in results/README.md."""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path

import pandas as pd

from pwbench.errors import UserError

SCHEMA_VERSION = 1
META, RECORDS = "meta.json", "records.jsonl"
CURVES = "tuning_curves.csv"


def default_dir(suite: str, target: str) -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe_target = "".join(c if c.isalnum() else "-" for c in target)[:40]
    return Path("results") / f"{stamp}_{suite}_{safe_target}"


class RunWriter:
    def __init__(self, directory: Path, meta: dict):
        self.dir = Path(directory)
        if (self.dir / RECORDS).exists():
            raise UserError(f"{self.dir} already holds a run; choose another --output")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.meta = {"schema_version": SCHEMA_VERSION, "status": "running", **meta}
            self._write_meta()
            self._records = open(self.dir / RECORDS, "a", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write results to {self.dir}: {exc.strerror or exc}; "
                            "choose another --output") from None
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._records.write(json.dumps(row, allow_nan=True) + "\n")
        self._records.flush()
        os.fsync(self._records.fileno())

    def add_curve(self, rows: list[dict]) -> None:
        """Rows of tuning_curves.csv (a tuned kernel's best latency vs trial and seconds)."""
        if not rows:
            return
        path = self.dir / CURVES
        pd.DataFrame(rows).to_csv(path, mode="a", header=not path.exists(), index=False)

    def finish(self, status: str = "complete") -> None:
        self._records.close()
        self.meta["status"] = status
        self.meta["rows"] = len(self.rows)
        self._write_meta()
        if self.rows:
            frame = pd.DataFrame(self.rows)
            frame.to_parquet(self.dir / "records.parquet", index=False)
            flat = frame.assign(samples_s=frame["samples_s"].map(
                lambda s: " ".join(repr(v) for v in s)))
            flat.to_csv(self.dir / "records.csv", index=False)

    def _write_meta(self) -> None:
        tmp = self.dir / (META + ".tmp")
        tmp.write_text(json.dumps(self.meta, indent=2, default=str))
        tmp.replace(self.dir / META)


def read_run(directory) -> tuple[dict, pd.DataFrame]:
    """Load a run directory (a finished run, or the rows an interrupted one kept)."""
    path = Path(directory)
    if not path.is_dir():
        raise UserError(f"{path} {'is not a directory' if path.exists() else 'does not exist'}; "
                        "expected a pwbench run directory")
    if not (path / META).is_file():
        raise UserError(f"{path} is not a pwbench run directory (no {META})")
    try:
        meta = json.loads((path / META).read_text())
    except ValueError as exc:
        raise UserError(f"{path / META} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path / META}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("schema_version", 0) > SCHEMA_VERSION:
        raise UserError(f"{path} was written by a newer pwbench (schema {meta['schema_version']}); "
                        "upgrade pwbench to read it")
    if (path / "records.parquet").is_file():
        try:
            return meta, pd.read_parquet(path / "records.parquet")
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise UserError(f"{path / 'records.parquet'}: unreadable: {str(exc)[:200]}") from None
    lines = (path / RECORDS).read_text().splitlines() if (path / RECORDS).exists() else []
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except ValueError:  # only the last line may be cut short by a crash
            if n < len(lines):
                raise UserError(f"{path / RECORDS}:{n}: malformed record") from None
    return meta, pd.DataFrame(rows)


def gflops(flops: int, seconds: float) -> float:
    return flops / seconds / 1e9 if seconds and not math.isnan(seconds) else math.nan
