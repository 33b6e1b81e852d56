"""Tuning curves: `tuning_curves.csv` in a run directory (written by tuned backends), one row per
trial with the best latency found so far."""

from __future__ import annotations

import pandas as pd

from pwbench.errors import UserError
from pwbench.report.runs import Run

FILE = "tuning_curves.csv"
COLUMNS = ("spec_id", "layer", "backend", "target", "trial", "elapsed_s", "best_s")
NUMERIC = ("trial", "elapsed_s", "best_s")


def read(run: Run) -> pd.DataFrame | None:
    path = run.dir / FILE
    if not path.is_file():
        return None
    try:
        curves = pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: unreadable tuning curves: {exc}") from None
    missing = [c for c in COLUMNS if c not in curves.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} "
                        f"(expected {', '.join(COLUMNS)})")
    for column in NUMERIC:
        values = pd.to_numeric(curves[column], errors="coerce")
        if values.isna().any():
            line = int(values.isna().to_numpy().argmax()) + 2
            raise UserError(f"{path}:{line}: {column} is not a number")
        curves[column] = values
    return curves


def baseline_seconds(run: Run, spec_id: str, baseline: str) -> float | None:
    rows = run.records[(run.records["spec_id"] == spec_id) & (run.records["backend"] == baseline)]
    seconds = rows["median_s"].dropna()
    return float(seconds.iloc[0]) if len(seconds) else None
