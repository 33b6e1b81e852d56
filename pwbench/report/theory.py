"""Theory vs measured for factored-vs-full pairs (suites/separable_vs_full.toml): the ratios the
seed articles predict from the shapes next to the latency ratio measured on each backend.

- params / FLOP ratio: sum over the factored side / the full conv (exact, from the shapes).
- seed formula (depthwise-separable only): 1/C_out + 1/k^2, the MAC fraction of a depthwise kxk
  plus pointwise pair relative to the full kxk conv.
- time ratio: sum of the factored side's medians / the full side's median, per backend.
- saving kept: (1 - time ratio) / (1 - FLOP ratio), the share of the FLOP saving that survives
  as a time saving (100 %: all of it; below 0: the factored block is slower than the full conv).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pwbench.report.runs import Run


def has_pairs(run: Run) -> bool:
    rec = run.records
    return {"pair", "side"} <= set(rec.columns) and (rec["pair"].fillna("") != "").any()


def pairs(run: Run) -> pd.DataFrame:
    """One row per (pair, backend); pairs that lack a factored or a full side are left out."""
    rec = run.records[run.records["pair"].fillna("") != ""]
    rows = []
    for pair, members in rec.groupby("pair", sort=False):
        shapes = members.drop_duplicates("layer")
        factored, full = shapes[shapes["side"] == "factored"], shapes[shapes["side"] == "full"]
        if factored.empty or len(full) != 1:
            continue
        theory = _predicted(factored, full.iloc[0])
        for backend, timed in members.groupby("backend", sort=False):
            rows.append({"pair": pair, **theory, "backend": backend,
                         **_measured(timed, theory["flop_ratio"])})
    return pd.DataFrame(rows)


def _predicted(factored: pd.DataFrame, full) -> dict:
    depthwise = factored[factored["kind"] == "depthwise"]
    block = ("depthwise-separable" if not depthwise.empty
             else "bottleneck" if (factored["kind"] == "pointwise").any() else "factored")
    seed = math.nan
    if block == "depthwise-separable":
        kh, kw = _kernel(depthwise.iloc[0]["kernel_size"])
        seed = 1 / full["out_channels"] + 1 / (kh * kw)
    return {"block": block, "params_ratio": factored["params"].sum() / full["params"],
            "flop_ratio": factored["flops"].sum() / full["flops"], "seed_formula": seed,
            "factored_intensity": factored["flops"].sum() / factored["bytes"].sum(),
            "full_intensity": full["intensity"]}


def _kernel(text) -> tuple[int, int]:
    parts = [int(p) for p in str(text).split("x")]
    return (parts[0], parts[-1])


def _measured(timed: pd.DataFrame, flop_ratio: float) -> dict:
    factored, full = timed[timed["side"] == "factored"], timed[timed["side"] == "full"]
    factored_s, full_s = factored["median_s"].sum(min_count=len(factored)), full["median_s"].iloc[0]
    ratio = factored_s / full_s
    depthwise_s = factored.loc[factored["kind"] == "depthwise", "median_s"].sum()
    return {
        "time_ratio": ratio,
        "saving_kept_pct": 100 * (1 - ratio) / (1 - flop_ratio) if flop_ratio < 1 else math.nan,
        "depthwise_share_pct": 100 * depthwise_s / factored_s if depthwise_s else math.nan,
        "factored_pct_of_roof": 100 * factored["roofline_s"].sum() / factored_s,
        "full_pct_of_roof": float(full["pct_of_roof"].iloc[0]),
    }


COLUMNS = {  # column -> (header, format)
    "pair": ("pair", "text"), "block": ("block", "text"), "backend": ("backend", "text"),
    "params_ratio": ("params ratio", "ratio"), "params_fewer": ("× fewer params", "times"),
    "flop_ratio": ("FLOP ratio", "ratio"), "seed_formula": ("1/C_out + 1/k²", "ratio"),
    "time_ratio": ("time ratio", "ratio"), "saving_kept_pct": ("FLOP saving kept", "pct"),
    "depthwise_share_pct": ("depthwise share of time", "pct"),
    "factored_pct_of_roof": ("factored % of roof", "pct"), "full_pct_of_roof": ("full % of roof", "pct"),
}


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """The numeric columns in reading order (formatting is the tables module's job)."""
    return frame.assign(params_fewer=1 / frame["params_ratio"])[list(COLUMNS)]


def summary(frame: pd.DataFrame, run: Run) -> list[str]:
    """Plain sentences computed from the measurements: how much saving survives, and why."""
    lines = []
    for backend, rows in frame.groupby("backend", sort=False):
        lines.append(
            f"{backend}: over {len(rows)} pairs the factored blocks need a median "
            f"{100 * rows['flop_ratio'].median():.0f} % of the full conv's FLOPs but take "
            f"{100 * rows['time_ratio'].median():.0f} % of its time (median share of the FLOP "
            f"saving kept: {rows['saving_kept_pct'].median():.0f} %).")
    lines += _depthwise_reason(run)
    return lines


def _depthwise_reason(run: Run) -> list[str]:
    if run.peaks is None:
        return []
    rec = run.records.dropna(subset=["median_s"])
    out = []
    for kind in ("depthwise", "pointwise", "full"):
        rows = rec[rec["kind"] == kind]
        if rows.empty:
            continue
        below = float(np.mean(rows["intensity"] < run.peaks.ridge))
        out.append(
            f"{kind} layers: median intensity {rows['intensity'].median():.1f} FLOP/B "
            f"(ridge {run.peaks.ridge:.1f}), {100 * below:.0f} % of them on the bandwidth slope; "
            f"median {rows['pct_of_roof'].median():.0f} % of roof.")
    return out
