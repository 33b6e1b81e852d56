"""One side of a comparison: each kernel of a run, or of a baseline of several invocations (runs),
with its samples, its per-process medians and its per-invocation means (analysis/stats.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pwbench import samples
from pwbench.analysis.stats import Spread, pooled_spread, spread
from pwbench.store import results
from pwbench.store.results import INVOCATION  # which run of a baseline a row is from



@dataclass
class Side:
    """One kernel in one run (or in several runs); a shape recurring under several layer names is
    one kernel, measured once and copied into each layer's row."""
    layers: list[str]
    samples: np.ndarray
    process_logs: np.ndarray  # log median of each measuring process (of every run pooled)
    median_s: float
    check: str
    error: str
    invocation_logs: np.ndarray = field(default_factory=lambda: np.array([]))  # per run: the
    # mean of its processes' log medians
    run_spread: Spread | None = None  # between processes, pooled over every kernel of the side
    invocation_spread: Spread | None = None  # between runs, pooled over every kernel
    count_medians: np.ndarray = field(default_factory=lambda: np.array([]))  # instruction clock:
    # the median instructions per call of each process

    @property
    def instructions(self) -> float:
        return float(np.median(self.count_medians)) if self.count_medians.size else math.nan

    @property
    def invocations(self) -> int:
        return self.invocation_logs.size


def sides(records: pd.DataFrame) -> dict[tuple, Side]:
    """Rows grouped by kernel (results.KERNEL_KEY). Distinct measurements of one kernel (several
    runs, or older runs that measured a shape once per layer) are pooled, each process of each
    keeping its own identity and each run (the INVOCATION column) its own mean; copies of one
    measurement count once."""
    if INVOCATION not in records:
        records = records.assign(**{INVOCATION: 0})
    out = {key: _side(group) for key, group in
           records.groupby(list(results.KERNEL_KEY), sort=False, dropna=False)}
    runs = pooled_spread(spread(s.process_logs) for s in out.values())
    invocations = pooled_spread(spread(s.invocation_logs) for s in out.values())
    for side in out.values():
        side.run_spread, side.invocation_spread = runs, invocations
    return out


def _side(group: pd.DataFrame) -> Side:
    unique, logs, counts, by_run = {}, [], {}, {}
    for row in group.itertuples(index=False):
        procs = getattr(row, "samples_process", None)
        values = tuple(row.samples_s) if _listlike(row.samples_s) else ()
        if values and values not in unique:
            unique[values] = _processes(procs, len(values))
            mine = list(np.log(samples.process_medians(values, unique[values])))
            logs += mine
            by_run.setdefault(getattr(row, INVOCATION), []).extend(mine)
        instructions = getattr(row, "samples_instructions", None)
        instructions = tuple(instructions) if _listlike(instructions) else ()
        if instructions and instructions not in counts:  # copies of one measurement count once
            counts[instructions] = samples.process_medians(
                instructions, _processes(procs, len(instructions)))
    pooled = np.concatenate([np.asarray(v, float) for v in unique]) if unique else np.array([])
    checks = [str(c) for c in group["check"].fillna("")]
    return Side(list(dict.fromkeys(map(str, group["layer"]))), pooled, np.asarray(logs),
                float(np.median(pooled)) if pooled.size else math.nan, _worst_check(checks),
                next((str(e) for e in group["error"] if e), ""),
                invocation_logs=np.array([np.mean(v) for v in by_run.values()]),
                count_medians=np.concatenate([*counts.values()]) if counts else np.array([]))


def _processes(procs, n: int) -> np.ndarray:
    return np.asarray(procs) if _listlike(procs) and len(procs) == n else np.zeros(n, int)


def _listlike(value) -> bool:
    return value is not None and not isinstance(value, (float, str)) and hasattr(value, "__len__")


def _worst_check(checks: list[str]) -> str:
    for verdict in ("failed", "", "untrusted"):
        if verdict in checks:
            return verdict
    return "passed"
