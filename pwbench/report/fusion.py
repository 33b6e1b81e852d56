"""Fusion gain: each block's time next to the sum of its layers' times, per backend, from one run.

A block (workloads/blocks.py) is measured whole, and each of its convs alone (rows whose
`part_of` names the block, `[[block]]` entries of suites/README.md). On one backend,
    fusion gain = sum of the layers' medians / the block's median:
above 1 the block runs faster than its convs one by one (what lies between them is fused, or
never leaves the cache), below 1 it is slower (the activations, adds and pool it adds cost more
than fusion saves). The layers alone do no bias, activation or residual, so a gain of 1 already
means that those came for free.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pwbench.report.runs import Run


def has_blocks(run: Run) -> bool:
    rec = run.records
    return "part_of" in rec.columns and (rec["part_of"].fillna("") != "").any()


def gains(run: Run) -> pd.DataFrame:
    """One row per (block, backend) that has layers in the run, backends in the run's order; a
    backend that does not compute blocks (their rows `skipped`) has none."""
    rec = run.records
    order = {b: i for i, b in enumerate(run.backends)}
    rec = rec.iloc[sorted(range(len(rec)), key=lambda i: order[rec["backend"].iloc[i]])]
    parts = rec[rec["part_of"].fillna("") != ""]
    rows = []
    for block, members in parts.groupby("part_of", sort=False):
        whole = rec[(rec["layer"] == block) & (rec["part_of"].fillna("") == "")]
        if whole.empty:
            continue
        expected = members["layer"].nunique()
        for backend, own in whole.groupby("backend", sort=False):
            if own["check"].iloc[0] == "skipped":
                continue
            layers = members[members["backend"] == backend].drop_duplicates("layer")
            block_s = float(own["median_s"].iloc[0])
            timed = layers["median_s"].dropna()
            layers_s = float(timed.sum()) if len(timed) == expected else math.nan
            rows.append({"block": block, "kind": own["kind"].iloc[0], "backend": backend,
                         "block_s": block_s, "layers_s": layers_s,
                         "layers": f"{len(timed)}/{expected}", "gain": layers_s / block_s,
                         "block_pct_of_roof": float(own["pct_of_roof"].iloc[0]),
                         "check": own["check"].iloc[0] or "not run"})
    return pd.DataFrame(rows)


COLUMNS = {
    "block": ("block", "text"), "kind": ("kind", "text"), "backend": ("backend", "text"),
    "block_s": ("block median", "seconds"), "layers_s": ("sum of its layers", "seconds"),
    "layers": ("layers timed", "text"), "gain": ("fusion gain (layers / block)", "speedup"),
    "block_pct_of_roof": ("block % of roof", "pct"), "check": ("block check", "text"),
}


def summary(frame: pd.DataFrame) -> list[str]:
    lines = []
    for backend, rows in frame.groupby("backend", sort=False):
        gain = rows["gain"].dropna()
        if gain.empty:
            lines.append(f"{backend}: no block with all its layers timed.")
            continue
        best = rows.loc[gain.idxmax()]
        lines.append(f"{backend}: geometric mean fusion gain {_geomean(gain):.2f}× over "
                     f"{len(gain)} block(s) (best: {best['block']}, {best['gain']:.2f}×).")
    return lines


def _geomean(values) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(values, float)))))
