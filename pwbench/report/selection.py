"""Hardware selection across runs of one suite: network latency per machine and backend (each
layer's median weighted by its count), the winner per layer kind, throughput, and with prices or
power given, throughput per dollar and per watt. Runs of different suites are reported apart;
runs of one suite that measured different layers (another batch size, filter or suite version)
are refused: their totals would not be comparable."""

from __future__ import annotations

import math

import pandas as pd

from pwbench.errors import UserError
from pwbench.report.costs import Costs
from pwbench.report.runs import Run
from pwbench.report.tables import counted, weighted_total_s


def by_suite(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.suite, []).append(run)
    for suite, members in groups.items():
        _require_same_layers(suite, members)
    return groups


def _require_same_layers(suite: str, runs: list[Run]) -> None:
    first = runs[0]
    for other in runs[1:]:
        a, b = set(first.records["spec_id"]), set(other.records["spec_id"])
        if a != b:
            batches = sorted(set(first.records["batch"])), sorted(set(other.records["batch"]))
            why = f"batch {batches[0]} vs {batches[1]}" if batches[0] != batches[1] else (
                f"{len(a - b)} layer shape(s) only in the first, {len(b - a)} only in the second")
            raise UserError(f"runs {first.dir} and {other.dir} of suite {suite} measured different "
                            f"layers ({why}); report them separately")


def emulated_warning(runs: list[Run]) -> str | None:
    """Said before a ranking that holds runs timed on an emulator (qemu): their times rank, but
    say nothing of the hardware emulated."""
    emulated = [r.label for r in runs if is_emulated(r)]
    if not emulated:
        return None
    return (f"{', '.join(emulated)}: timed on an emulated board (qemu); its times say nothing of "
            "real hardware, only its numerics count: do not choose hardware by its rank below")


def is_emulated(run: Run) -> bool:
    rows = run.records["emulated"] if "emulated" in run.records else pd.Series(dtype=bool)
    return bool(run.meta.get("emulated")) or bool(rows.fillna(False).astype(bool).any())


def entries(runs: list[Run], costs: Costs) -> pd.DataFrame:
    """One row per (machine, backend), fastest network first; NaN latency ranks last."""
    rows = []
    for run in runs:
        price_watts = costs.for_run(run)
        layouts = run.layouts if len(run.layouts) > 1 else [None]
        for backend in run.backends:
            for layout in layouts:  # a run of several layouts: each is a network of its own
                entry = _entry(run, backend, price_watts, layout)
                if entry is not None:  # e.g. a blocked variant exists for NCHW layers only
                    rows.append(entry)
    frame = pd.DataFrame(rows).sort_values("latency_s", na_position="last", kind="stable")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index(drop=True)


def _entry(run: Run, backend: str, price_watts: dict, layout: str | None = None) -> dict | None:
    rec = run.records[run.records["kernel"] == backend]
    if layout is not None:
        rec = rec[rec["layout"] == layout]
        backend = f"{backend} {layout}"
    rec = counted(rec.drop_duplicates("layer"))
    if rec.empty:
        return None
    latency = weighted_total_s(rec["median_s"], rec["count"])
    batch = int(rec["batch"].iloc[0])
    throughput = batch / latency if latency > 0 else math.nan
    price, watts = price_watts.get("price_per_hour", math.nan), price_watts.get("watts", math.nan)
    entry = {"machine": run.label + (" (emulated)" if is_emulated(run) else ""),
             "backend": backend, "target": run.meta.get("target", ""),
             "latency_s": latency, "throughput_per_s": throughput,
             "gflops": float((rec["flops"] * rec["count"]).sum()) / latency / 1e9,
             "price_per_hour": price, "watts": watts,
             "per_dollar": throughput * 3600 / price, "per_watt": throughput / watts}
    for kind, rows in rec.groupby("kind"):
        entry[f"kind_{kind}_s"] = weighted_total_s(rows["median_s"], rows["count"])
    return entry


def winners(frame: pd.DataFrame) -> pd.DataFrame:
    """Per layer kind: each machine/backend's weighted time and the fastest of them."""
    kinds = [c[len("kind_"):-len("_s")] for c in frame.columns if c.startswith("kind_")]
    names = frame["machine"] + " · " + frame["backend"]
    rows = []
    for kind in kinds:
        times = pd.Series(frame[f"kind_{kind}_s"].to_numpy(), index=names)
        best = times.idxmin() if times.notna().any() else "–"
        rows.append({"kind": kind, **times.to_dict(), "winner": best})
    return pd.DataFrame(rows)


def winners_columns(frame: pd.DataFrame) -> dict:
    names = frame["machine"] + " · " + frame["backend"]
    return {"kind": ("kind", "text"), **{n: (n, "seconds") for n in names},
            "winner": ("fastest", "text")}


def pareto_front(frame: pd.DataFrame, cost: str) -> pd.Series:
    """True for the entries no other entry beats on both throughput (higher) and cost (lower)."""
    front = []
    for _, row in frame.iterrows():
        dominated = (
            (frame["throughput_per_s"] >= row["throughput_per_s"]) & (frame[cost] <= row[cost])
            & ((frame["throughput_per_s"] > row["throughput_per_s"]) | (frame[cost] < row[cost])))
        front.append(not dominated.any() and not math.isnan(row[cost]))
    return pd.Series(front, index=frame.index)


def entries_columns(frame: pd.DataFrame) -> dict:
    columns = {"rank": ("rank", "count"), "machine": ("machine", "text"),
               "backend": ("backend", "text"), "latency_s": ("network latency", "seconds"),
               "throughput_per_s": ("throughput (inferences/s)", "number"),
               "gflops": ("GFLOP/s", "gflops")}
    if frame["price_per_hour"].notna().any():
        columns |= {"price_per_hour": ("USD/hour", "number"),
                    "per_dollar": ("inferences per USD", "number")}
    if frame["watts"].notna().any():
        columns |= {"watts": ("watts", "number"), "per_watt": ("inferences/s per W", "number")}
    return columns
