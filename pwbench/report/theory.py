"""Theory vs measured for factored-vs-full pairs (suites/separable_vs_full.toml, and blocks with
`replaces = true` in suites/blocks.toml): the ratios the seed articles predict from the shapes
next to the latency ratio measured on each backend.

- params / FLOP ratio: sum over the factored side / the full conv (exact, from the shapes). The
  factored side is a list of layers, or one block measured whole.
- seed formula (depthwise-separable only): 1/C_out + 1/k^2, the MAC fraction of a depthwise kxk
  plus pointwise pair relative to the full kxk conv.
- time ratio: sum of the factored side's medians / the full side's median, per backend. For a
  block also the layer-by-layer ratio: the sum of its layers measured alone / the full conv, so
  that the block's saving can be read next to what its convs one by one keep.
- saving kept: (1 - time ratio) / (1 - FLOP ratio), the share of the FLOP saving that survives
  as a time saving (100 %: all of it; below 0: the factored block is slower than the full conv).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pwbench.report.runs import Run
from pwbench.workloads.blocks import KINDS

BLOCK_KINDS = set(KINDS)


def has_pairs(run: Run) -> bool:
    rec = run.records
    return {"pair", "side"} <= set(rec.columns) and (rec["pair"].fillna("") != "").any()


def pairs(run: Run) -> pd.DataFrame:
    """One row per (pair, backend); pairs that lack a factored or a full side are left out."""
    rec = run.records
    paired = rec[rec["pair"].fillna("") != ""]
    parts = rec["part_of"].fillna("") if "part_of" in rec.columns else pd.Series("", rec.index)
    rows = []
    for pair, members in paired.groupby("pair", sort=False):
        shapes = members.drop_duplicates("layer")
        factored, full = shapes[shapes["side"] == "factored"], shapes[shapes["side"] == "full"]
        if factored.empty or len(full) != 1:
            continue
        blocks = factored[factored["kind"].isin(BLOCK_KINDS)]
        # a block's layers measured alone: the layer-by-layer side of the same claim
        layers = rec[parts.isin(blocks["layer"])] if not blocks.empty else rec.iloc[:0]
        theory = _predicted(factored, full.iloc[0], layers.drop_duplicates("layer"))
        for backend, timed in members.groupby("backend", sort=False):
            rows.append({"pair": pair, **theory, "backend": backend,
                         **_measured(timed, layers[layers["backend"] == backend],
                                     theory["flop_ratio"])})
    return pd.DataFrame(rows)


def _predicted(factored: pd.DataFrame, full, layers: pd.DataFrame) -> dict:
    convs = layers if not layers.empty else factored
    depthwise = convs[convs["kind"] == "depthwise"]
    kinds = set(factored["kind"])
    if kinds & BLOCK_KINDS:
        block = "depthwise-separable" if kinds == {"separable"} else "/".join(sorted(kinds))
    else:
        block = ("depthwise-separable" if not depthwise.empty
                 else "bottleneck" if (factored["kind"] == "pointwise").any() else "factored")
    seed = math.nan
    if block == "depthwise-separable":
        kh, kw = _kernel(depthwise.iloc[0]["kernel_size"] if not depthwise.empty
                         else factored.iloc[0]["kernel_size"])
        seed = 1 / full["out_channels"] + 1 / (kh * kw)
    return {"block": block, "params_ratio": factored["params"].sum() / full["params"],
            "flop_ratio": factored["flops"].sum() / full["flops"], "seed_formula": seed,
            "factored_intensity": factored["flops"].sum() / factored["bytes"].sum(),
            "full_intensity": full["intensity"]}


def _kernel(text) -> tuple[int, int]:
    parts = [int(p) for p in str(text).split("x")]
    return (parts[0], parts[-1])


def _measured(timed: pd.DataFrame, layers: pd.DataFrame, flop_ratio: float) -> dict:
    factored, full = timed[timed["side"] == "factored"], timed[timed["side"] == "full"]
    factored_s, full_s = factored["median_s"].sum(min_count=len(factored)), full["median_s"].iloc[0]
    ratio = factored_s / full_s
    layers = layers.drop_duplicates("layer")
    layers_s = layers["median_s"].sum(min_count=len(layers)) if not layers.empty else math.nan
    convs, convs_s = (layers, layers_s) if not layers.empty else (factored, factored_s)
    depthwise_s = convs.loc[convs["kind"] == "depthwise", "median_s"].sum()
    return {
        "time_ratio": ratio,
        "saving_kept_pct": _kept(ratio, flop_ratio),
        "layers_time_ratio": layers_s / full_s,
        "layers_saving_kept_pct": _kept(layers_s / full_s, flop_ratio),
        "depthwise_share_pct": 100 * depthwise_s / convs_s if depthwise_s else math.nan,
        "factored_pct_of_roof": 100 * factored["roofline_s"].sum() / factored_s,
        "full_pct_of_roof": float(full["pct_of_roof"].iloc[0]),
    }


def _kept(time_ratio: float, flop_ratio: float) -> float:
    return 100 * (1 - time_ratio) / (1 - flop_ratio) if flop_ratio < 1 else math.nan


COLUMNS = {  # column -> (header, format)
    "pair": ("pair", "text"), "block": ("block", "text"), "backend": ("backend", "text"),
    "params_ratio": ("params ratio", "ratio"), "params_fewer": ("× fewer params", "times"),
    "flop_ratio": ("FLOP ratio", "ratio"), "seed_formula": ("1/C_out + 1/k²", "ratio"),
    "time_ratio": ("time ratio", "ratio"), "saving_kept_pct": ("FLOP saving kept", "pct"),
    "layers_time_ratio": ("time ratio, layer by layer", "ratio"),
    "layers_saving_kept_pct": ("saving kept, layer by layer", "pct"),
    "depthwise_share_pct": ("depthwise share of time", "pct"),
    "factored_pct_of_roof": ("factored % of roof", "pct"), "full_pct_of_roof": ("full % of roof", "pct"),
}


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """The numeric columns in reading order (formatting is the tables module's job); the
    layer-by-layer columns only where some pair's factored side is a block."""
    columns = [c for c in COLUMNS if not c.startswith("layers_") or frame[c].notna().any()]
    return frame.assign(params_fewer=1 / frame["params_ratio"])[columns]


def columns(frame: pd.DataFrame) -> dict:
    return {c: COLUMNS[c] for c in table(frame).columns}


def summary(frame: pd.DataFrame, run: Run) -> list[str]:
    """Plain sentences computed from the measurements: how much saving survives, and why."""
    lines = []
    for backend, rows in frame.groupby("backend", sort=False):
        lines.append(
            f"{backend}: over {len(rows)} pairs the factored blocks need a median "
            f"{100 * rows['flop_ratio'].median():.0f} % of the full conv's FLOPs but take "
            f"{100 * rows['time_ratio'].median():.0f} % of its time (median share of the FLOP "
            f"saving kept: {rows['saving_kept_pct'].median():.0f} %).")
        for row in rows[rows["layers_time_ratio"].notna()].itertuples():
            lines.append(
                f"{backend}, {row.pair} ({row.block}): the block takes {100 * row.time_ratio:.0f} % "
                f"of the full conv's time, its layers one by one {100 * row.layers_time_ratio:.0f} %"
                f" ({100 * row.flop_ratio:.0f} % of the FLOPs"
                + (f"; seed formula 1/C_out + 1/k² = {100 * row.seed_formula:.1f} %)"
                   if not math.isnan(row.seed_formula) else ")")
                + f": the saving survives {'better' if row.time_ratio < row.layers_time_ratio else 'worse'}"
                  " at block level.")
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
