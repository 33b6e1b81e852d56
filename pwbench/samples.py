"""Statistics of raw timing samples, derived on demand and never stored rounded."""

from __future__ import annotations

import math

import numpy as np

NOISY_IQR_FRACTION = 0.10  # warn when the IQR exceeds this share of the median


def summary(samples) -> dict:
    """median_s, iqr_s, min_s and noisy of per-call samples in seconds (NaN when there are none)."""
    s = np.asarray(samples, dtype=float)
    if s.size == 0:
        return {"median_s": math.nan, "iqr_s": math.nan, "min_s": math.nan, "noisy": False}
    median = float(np.median(s))
    iqr = float(np.subtract(*np.percentile(s, [75, 25]))) if s.size >= 4 else 0.0
    return {"median_s": median, "iqr_s": iqr, "min_s": float(s.min()),
            "noisy": iqr > NOISY_IQR_FRACTION * median}


def process_medians(samples, processes) -> np.ndarray:
    """The median of each process's samples, in process order: the units a between-process
    comparison works on."""
    s, p = np.asarray(samples, dtype=float), np.asarray(processes)
    return np.array([np.median(s[p == i]) for i in sorted(set(p.tolist()))])


# Per-call figures of the instruction clock (measure/instructions.py): a row of that clock has
# `samples_<column>` (every counted call of every process, in process order) and `<column>`, their
# median. Counts are integers and need no interval: their spread between processes is far below
# any change worth gating on (README, "Instruction counts").
COUNT_COLUMNS = ("instructions", "l1_misses", "ll_misses", "estimated_cycles")


def count_summary(counts: dict) -> dict:
    """The median of each count column's per-call samples (NaN when there are none)."""
    return {c: float(np.median(counts[c])) if len(counts.get(c) or ()) else math.nan
            for c in COUNT_COLUMNS}
