"""TVM over the best library, two ways per layer (> 1: TVM is faster), from the verified rows of
a run. The library side is every backend that calls a vendor library (torch eager, torch-frozen
and onnxruntime on a CPU: oneDNN and MLAS; cuDNN on a GPU), the TVM side every TVM backend (the
registry's `side`):

  like for like (one per layout: NCHW, NHWC)
      the fastest library row with that layout in and out over the fastest TVM row with that
      layout in and out (conversions inside the timed call);
  best vs best
      each side's fastest row in a layout frameworks exchange (NCHW or NHWC), whichever it is:
      what a user choosing a stack gets. Each side's winner is named.

For a network suite, `network_totals` adds each side's best over the layers, each times how
often it occurs in the network (`count`): the latency of the network's convs on each stack.

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


SIDES = ("library", "tvm")


def side_of(backend: str) -> str:
    """'library' or 'tvm' (the backend registry's side), '' for a backend it does not know."""
    from pwbench import backends

    info = backends.REGISTRY.get(backend)
    return info.side if info else ""


def per_layer(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per layer (suite order): each side's fastest time per layout, the blocked time,
    both speedups, the winners of best vs best and how often the layer occurs; empty when a side
    has no verified row."""
    ok = rows[(rows["check"] == "passed") & rows["median_s"].notna()].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["stack_side"] = ok["backend"].map(side_of)
    if not set(SIDES) <= set(ok["stack_side"]):
        return pd.DataFrame()
    variant = ok["variant"].fillna("") if "variant" in ok else pd.Series("", index=ok.index)
    ok["name"] = ok["backend"] + variant.map(lambda v: f" {v}" if v else "") + " " + ok["layout"]
    ok["blocked"] = variant == BLOCKED
    ok["shape"] = [_without_layout(s, lay) for s, lay in zip(ok["spec_id"], ok["layout"])]
    return pd.DataFrame([_layer_row(shape, group) for shape, group in ok.groupby("shape", sort=False)])


def _layer_row(shape: str, group: pd.DataFrame) -> dict:
    row = {"layer": _layer_name(group), "kind": group["kind"].iloc[0], "shape_id": shape,
           "count": _count(group), "alone": _alone(group)}
    dense = group[~group["blocked"]]
    for layout in LAYOUTS:
        for side in SIDES:
            row[f"{side} {layout} s"] = _fastest(dense[(dense["stack_side"] == side)
                                                       & (dense["layout"] == layout)])[0]
        row[f"like for like {layout}"] = _ratio(row[f"library {layout} s"], row[f"tvm {layout} s"])
    row["tvm blocked s"] = _fastest(group[group["blocked"]])[0]
    for side in SIDES:
        row[f"best {side} s"], row[f"best {side}"] = _fastest(dense[dense["stack_side"] == side])
    row["best vs best"] = _ratio(row["best library s"], row["best tvm s"])
    return row


def _count(group: pd.DataFrame) -> int:
    """How often the shape occurs in the network: the counts of the layer names it has."""
    if "count" not in group:
        return 1
    return int(group.drop_duplicates("layer")["count"].fillna(1).sum())


def _alone(group: pd.DataFrame) -> bool:
    """Measured alone as part of a block (its fusion gain's baseline), not a layer of its own."""
    return "part_of" in group and bool(group["part_of"].fillna("").astype(str).ne("").all())


def network_totals(table: pd.DataFrame) -> dict:
    """Each side's best over the network's layers, each times its count, and their ratio (the
    library's total over TVM's: > 1, TVM's network is faster); over the layers both sides timed.
    Layers measured alone for a block's fusion gain are not in a table's network (`part_of`)."""
    if table.empty:
        return {}
    network = table[~table["alone"]]
    both = network.dropna(subset=["best library s", "best tvm s"])
    library = float((both["best library s"] * both["count"]).sum())
    tvm = float((both["best tvm s"] * both["count"]).sum())
    return {"library_s": library, "tvm_s": tvm, "ratio": _ratio(library, tvm),
            "layers": len(both), "of": len(network), "convs": int(both["count"].sum())}


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


def _ratio(library_s: float, tvm_s: float) -> float:
    return library_s / tvm_s if tvm_s and not math.isnan(tvm_s) and not math.isnan(library_s) \
        else math.nan


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
        columns |= {f"library {layout} s": (f"library {layout}", "seconds"),
                    f"tvm {layout} s": (f"TVM {layout}", "seconds"),
                    f"like for like {layout}": (f"like for like {layout}", "speedup")}
    return columns | {"tvm blocked s": ("TVM blocked (not counted)", "seconds"),
                      "best library": ("the library's best", "text"),
                      "best tvm": ("TVM's best", "text"),
                      "best vs best": ("best vs best", "speedup")}


def kind_columns() -> dict:
    return {"kind": ("kind", "text"),
            **{f"like for like {layout}": (f"like for like {layout}", "speedup") for layout in LAYOUTS},
            "best vs best": ("best vs best", "speedup"),
            "lowest best vs best": ("lowest layer", "speedup"), "layers": ("layers", "count")}
