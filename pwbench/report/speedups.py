"""TVM over torch, two ways per layer (> 1: TVM is faster), from the verified rows of a run:

  like for like (one per layout: NCHW, NHWC)
      the fastest torch row with that layout in and out (torch eager or torch-frozen) over the
      fastest TVM row with that layout in and out (conversions inside the timed call);
  best vs best
      each stack's fastest row in a layout frameworks exchange (NCHW or NHWC), whichever it is:
      what a user choosing a stack gets. Each stack's winner is named.

Blocked end to end (TVM's `structured-blocked` variant, NCHW[x]c in and out) is shown in its
own column and never counted in either speedup: it is only what a whole network would see if
every layer used the layout, which a single-layer measurement does not show. A row counts only
when its check passed: a kernel that failed its check never counts. A layer is one shape in
every layout (its spec id without the layout); geomeans are per kind, over the layers that have
both sides.
"""

from __future__ import annotations

import math

import pandas as pd

LAYOUTS = ("NCHW", "NHWC")
BLOCKED = "structured-blocked"


def stack_of(backend: str) -> str:
    """'torch' or 'tvm' (the backend registry's stack), '' for a backend it does not know."""
    from pwbench import backends

    info = backends.REGISTRY.get(backend)
    return info.stack if info else ""


def per_layer(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per layer (suite order): each side's fastest time per layout, the blocked time,
    both speedups and the winners of best vs best; empty when a stack has no verified row."""
    ok = rows[(rows["check"] == "passed") & rows["median_s"].notna()].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["stack"] = ok["backend"].map(stack_of)
    if not {"torch", "tvm"} <= set(ok["stack"]):
        return pd.DataFrame()
    variant = ok["variant"].fillna("") if "variant" in ok else pd.Series("", index=ok.index)
    ok["name"] = ok["backend"] + variant.map(lambda v: f" {v}" if v else "") + " " + ok["layout"]
    ok["blocked"] = variant == BLOCKED
    ok["shape"] = [_without_layout(s, lay) for s, lay in zip(ok["spec_id"], ok["layout"])]
    out = []
    for shape, group in ok.groupby("shape", sort=False):
        row = {"layer": _layer_name(group), "kind": group["kind"].iloc[0], "shape_id": shape}
        dense = group[~group["blocked"]]
        for layout in LAYOUTS:
            for stack in ("torch", "tvm"):
                row[f"{stack} {layout} s"] = _fastest(dense[(dense["stack"] == stack)
                                                            & (dense["layout"] == layout)])[0]
            row[f"like for like {layout}"] = _ratio(row[f"torch {layout} s"], row[f"tvm {layout} s"])
        row["tvm blocked s"] = _fastest(group[group["blocked"]])[0]
        for stack in ("torch", "tvm"):
            row[f"best {stack} s"], row[f"best {stack}"] = _fastest(dense[dense["stack"] == stack])
        row["best vs best"] = _ratio(row["best torch s"], row["best tvm s"])
        out.append(row)
    return pd.DataFrame(out)


def by_kind(table: pd.DataFrame) -> pd.DataFrame:
    """Geomean per kind of each speedup, the lowest best vs best, and the layers counted."""
    if table.empty:
        return pd.DataFrame()
    columns = [f"like for like {layout}" for layout in LAYOUTS] + ["best vs best"]
    out = []
    for kind, group in table.groupby("kind", sort=False):
        row = {"kind": kind, **{c: geomean(group[c]) for c in columns}}
        row["lowest best vs best"] = group["best vs best"].min()
        row["layers"] = int(group["best vs best"].notna().sum())
        out.append(row)
    return pd.DataFrame(out)


def geomean(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    values = values[values > 0]
    return math.exp(values.map(math.log).mean()) if len(values) else math.nan


def _fastest(rows: pd.DataFrame) -> tuple[float, str]:
    if rows.empty:
        return math.nan, ""
    best = rows.loc[rows["median_s"].idxmin()]
    return float(best["median_s"]), str(best["name"])


def _ratio(torch_s: float, tvm_s: float) -> float:
    return torch_s / tvm_s if tvm_s and not math.isnan(tvm_s) and not math.isnan(torch_s) else math.nan


def _without_layout(spec_id: str, layout: str) -> str:
    suffix = f"_{str(layout).lower()}"
    return spec_id[: -len(suffix)] if spec_id.endswith(suffix) else spec_id


def _layer_name(group: pd.DataFrame) -> str:
    names = list(dict.fromkeys(group["layer"]))
    if len(names) == 1:
        return names[0]
    return _without_layout(str(group["spec_id"].iloc[0]), str(group["layout"].iloc[0]))


# ---- display (report tables and the console share these) ---------------------------------
def layer_columns() -> dict:
    columns = {"layer": ("layer", "text"), "kind": ("kind", "text")}
    for layout in LAYOUTS:
        columns |= {f"torch {layout} s": (f"torch {layout}", "seconds"),
                    f"tvm {layout} s": (f"TVM {layout}", "seconds"),
                    f"like for like {layout}": (f"like for like {layout}", "speedup")}
    return columns | {"tvm blocked s": ("TVM blocked (not counted)", "seconds"),
                      "best torch": ("torch's best", "text"), "best tvm": ("TVM's best", "text"),
                      "best vs best": ("best vs best", "speedup")}


def kind_columns() -> dict:
    return {"kind": ("kind", "text"),
            **{f"like for like {layout}": (f"like for like {layout}", "speedup") for layout in LAYOUTS},
            "best vs best": ("best vs best", "speedup"),
            "lowest best vs best": ("lowest layer", "speedup"), "layers": ("layers", "count")}
