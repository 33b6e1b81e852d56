"""Roofline arithmetic: the time a layer cannot beat on a machine with given peaks.

A layer with F FLOPs and B minimal bytes takes at least max(F / peak FLOP/s, B / peak bytes/s):
below the ridge intensity (peak FLOP/s / peak bytes/s) memory bounds it, above it compute does.
pct_of_roof = 100 * roofline_s / median_s is how close the measured time comes to that bound.
Peaks are fp32, plus the roofs measured for other dtypes (a GPU's fp16 / bf16 tensor-core GEMM);
rows of a dtype without a measured roof get NaN rather than a bound from the wrong roof. A TF32
row (`compute` = "tf32": fp32 tensors, tensor-core products) is drawn against the TF32 GEMM roof,
never the fp32 one, which it can exceed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

COLUMNS = ("roofline_s", "pct_of_roof", "bound")


def bound_s(flops: float, nbytes: float, flops_per_s: float, bytes_per_s: float) -> float:
    return max(flops / flops_per_s, nbytes / bytes_per_s)


def attainable_flops_per_s(intensity, flops_per_s: float, bytes_per_s: float):
    """The roof: min(peak FLOP/s, intensity x bandwidth); works on scalars and arrays."""
    return np.minimum(flops_per_s, np.asarray(intensity, dtype=float) * bytes_per_s)


def row_columns(flops: float, nbytes: float, dtype: str, median_s: float, peaks,
                compute_mode: str = "") -> dict:
    """roofline_s, pct_of_roof and bound for one record (NaN / '' when there is no bound)."""
    roof_of = "tf32" if compute_mode == "tf32" else dtype
    compute = peaks.flops_for(roof_of) if peaks is not None else None
    if not compute:
        return {"roofline_s": math.nan, "pct_of_roof": math.nan, "bound": ""}
    roof = bound_s(flops, nbytes, compute, peaks.bytes_per_s)
    pct = 100.0 * roof / median_s if median_s and not math.isnan(median_s) else math.nan
    bound = "memory" if flops / nbytes < compute / peaks.bytes_per_s else "compute"
    return {"roofline_s": roof, "pct_of_roof": pct, "bound": bound}


def add_columns(frame: pd.DataFrame, peaks) -> pd.DataFrame:
    """A copy of the records with the roofline columns (re)computed for these peaks."""
    out = frame.copy()
    if out.empty:
        return out.assign(**{c: pd.Series(dtype=float) for c in COLUMNS})
    values = [row_columns(r.flops, r.bytes, r.dtype, r.median_s, peaks, getattr(r, "compute", ""))
              for r in out.itertuples(index=False)]
    for column in COLUMNS:
        out[column] = [v[column] for v in values]
    return out
