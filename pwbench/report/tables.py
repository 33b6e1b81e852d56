"""Latency tables: one row per layer, each backend's median, GFLOP/s, speedup over the baseline
and % of roofline, the check verdict, and the network total weighted by each layer's count.

Tables are built as numeric frames (units in column names, as in the records) and formatted
only when written: Markdown, HTML and CSV files, and a rich table for the terminal.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from pwbench.report.runs import Run
from pwbench.units import format_seconds

TOTAL = "network total"


def baseline_of(run: Run, wanted: str = "torch") -> str:
    return wanted if wanted in run.backends else run.backends[0]


def shape_text(row) -> str:
    text = f"{row.in_channels}→{row.out_channels} {row.height}×{row.width} k{row.kernel_size}"
    if str(row.stride) != "1":
        text += f" s{row.stride}"
    if row.groups != 1 and row.kind != "depthwise":
        text += f" g{row.groups}"
    return text


def latency(run: Run, baseline: str) -> pd.DataFrame:
    """One row per layer (suite order; a layer measured in several layouts once per layout) plus
    a network total row per layout; NaN where a backend did not time. A column per backend, or
    backend and variant (run.backends)."""
    rec = run.records.assign(row=run.records["layer"] + _layout_suffix(run))
    layers = rec.drop_duplicates("row").set_index("row", drop=False)
    table = pd.DataFrame({
        "layer": layers["row"], "kind": layers["kind"],
        "shape": [shape_text(r) for r in layers.itertuples()], "count": layers["count"]})
    for backend in run.backends:
        rows = rec[rec["kernel"] == backend].drop_duplicates("row").set_index("row")
        table[f"{backend} median_s"] = rows["median_s"].reindex(table.index)
        table[f"{backend} gflops"] = layers["flops"] / table[f"{backend} median_s"] / 1e9
        table[f"{backend} pct_of_roof"] = rows["pct_of_roof"].reindex(table.index)
    for backend in run.backends:
        if backend != baseline:
            table[f"{backend} speedup"] = table[f"{baseline} median_s"] / table[f"{backend} median_s"]
    table["check"] = [_verdict(rec[rec["row"] == row]) for row in table.index]
    totals = []
    for layout in run.layouts or [None]:
        mine = layers.index if layout is None else layers.index[layers["layout"] == layout]
        label = TOTAL if len(run.layouts) < 2 else f"{TOTAL} {layout}"
        totals.append(_total_row(run, table.loc[mine], layers.loc[mine], baseline, label).to_frame().T)
    return pd.concat([table, *totals], ignore_index=True)


def _layout_suffix(run: Run):
    return (" " + run.records["layout"]) if len(run.layouts) > 1 else ""


def _verdict(rows: pd.DataFrame) -> str:
    verdicts = dict(zip(rows["kernel"], rows["check"].replace("", "not run")))
    if set(verdicts.values()) == {"passed"}:
        return "passed"
    return ", ".join(f"{b}: {v}" for b, v in verdicts.items() if v != "passed")


def counted(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows a network total adds up: not the layers of a block measured alone for its fusion
    gain (`part_of`), whose work the block's own row already holds."""
    if "part_of" not in rows.columns:
        return rows
    return rows[rows["part_of"].fillna("") == ""]


def weighted_total_s(seconds: pd.Series, counts: pd.Series) -> float:
    """Sum of count x median; NaN when any layer was not timed (an incomplete network)."""
    if seconds.isna().any():
        return math.nan
    return float((seconds * counts).sum())


def _total_row(run: Run, table: pd.DataFrame, layers: pd.DataFrame, baseline: str,
               label: str = TOTAL) -> pd.Series:
    alone = len(layers) - len(counted(layers))
    layers = counted(layers)
    counts = layers["count"].astype(float)
    flops = float((layers["flops"] * counts).sum())
    roof = layers["roofline_s"]
    shape = f"{len(layers)} layers" + (f" (not the {alone} measured alone for fusion gains)"
                                       if alone else "")
    total = {"layer": label, "kind": "", "shape": shape, "count": int(counts.sum())}
    for backend in run.backends:
        seconds = weighted_total_s(table.loc[layers.index, f"{backend} median_s"], counts)
        total[f"{backend} median_s"] = seconds
        total[f"{backend} gflops"] = flops / seconds / 1e9
        total[f"{backend} pct_of_roof"] = 100 * float((roof * counts).sum()) / seconds
    for backend in run.backends:
        if backend != baseline:
            total[f"{backend} speedup"] = total[f"{baseline} median_s"] / total[f"{backend} median_s"]
    failed = table["check"] != "passed"
    total["check"] = "passed" if not failed.any() else f"{int(failed.sum())} layer(s) not passed"
    return pd.Series(total)


RESOURCE_COLUMNS = {
    "layer": ("layer", "text"), "layout": ("layout", "text"), "backend": ("backend", "text"),
    "variant": ("variant", "text"),
    "dlight_rule": ("DLight rule", "text"), "cuda_arch": ("arch", "text"),
    "grid": ("grid", "text"), "block": ("block", "text"), "registers": ("registers", "count"),
    "shared_bytes": ("shared B", "count"), "spill_bytes": ("spill B", "count"),
    "local_bytes": ("local B", "count"), "blocks_per_sm": ("blocks/SM", "count"),
    "occupancy": ("occupancy", "ratio"), "build_s": ("build", "seconds"),
}


def resources(run: Run) -> pd.DataFrame | None:
    """The resources of the run's GPU kernels (rows that recorded them), or None."""
    rec = run.records
    if "registers" not in rec or rec["registers"].isna().all():
        return None
    rows = rec[rec["registers"].notna()].drop_duplicates(["spec_id", "backend", "variant"])
    return rows.reindex(columns=list(RESOURCE_COLUMNS)).reset_index(drop=True)


def throttled(run: Run) -> str:
    """A line naming the kernels timed while GPU clocks dropped, or ''."""
    rec = run.records
    if "throttled" not in rec:
        return ""
    hit = rec[rec["throttled"].fillna(False).astype(bool)]
    if hit.empty:
        return ""
    names = ", ".join(dict.fromkeys(f"{r.layer} [{r.backend}]" for r in hit.itertuples()))
    return (f"{len(hit)} kernel(s) were timed while the GPU's clocks dropped or were held down "
            f"(power, thermal): {names}. Their times are not steady-state.")


# ---- formatting --------------------------------------------------------------------------

def _number(fmt: str):
    return lambda v: "–" if v is None or not np.isfinite(float(v)) else fmt.format(float(v))


def _smart(value) -> str:
    if value is None or not np.isfinite(float(value)):
        return "–"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


FORMATTERS = {
    "seconds": format_seconds, "gflops": _number("{:.1f}"), "pct": _number("{:.0f} %"),
    "speedup": _number("{:.2f}×"), "ratio": _number("{:.3f}"), "times": _number("{:.1f}×"),
    "count": _number("{:.0f}"), "number": _smart, "text": lambda v: "" if v is None else str(v),
}


def display(frame: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """Strings for people. columns: name -> (header, format), format a key of FORMATTERS;
    every format but text is right-aligned when written."""
    out = pd.DataFrame(index=frame.index)
    out.attrs["numeric"] = []
    for column, (header, fmt) in columns.items():
        out[header] = frame[column].map(FORMATTERS[fmt])
        if fmt != "text":
            out.attrs["numeric"].append(header)
    return out


def latency_columns(run: Run, baseline: str) -> dict:
    columns = {"layer": ("layer", "text"), "kind": ("kind", "text"), "shape": ("shape", "text"),
               "count": ("count", "count")}
    for backend in run.backends:
        columns[f"{backend} median_s"] = (f"{backend} median", "seconds")
        columns[f"{backend} gflops"] = (f"{backend} GFLOP/s", "gflops")
        if backend != baseline:
            columns[f"{backend} speedup"] = (f"{backend} speedup vs {baseline}", "speedup")
        columns[f"{backend} pct_of_roof"] = (f"{backend} % of roof", "pct")
    columns["check"] = ("check", "text")
    return columns


def to_markdown(table: pd.DataFrame, title: str = "") -> str:
    cells = [[c.replace("|", "\\|") for c in map(str, row)] for row in table.itertuples(index=False)]
    right = _right_aligned(table)
    lines = [f"## {title}\n"] if title else []
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("| " + " | ".join("---:" if r else "---" for r in right) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def to_html(table: pd.DataFrame, caption: str = "", total_label: str = TOTAL) -> str:
    right = _right_aligned(table)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = []
    for row in table.itertuples(index=False):
        cls = ' class="total"' if str(row[0]).startswith(total_label) else ""
        cells = "".join(f'<td class="{"num" if r else "txt"}{_check_class(v)}">{html.escape(str(v))}</td>'
                        for v, r in zip(row, right))
        body.append(f"<tr{cls}>{cells}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<table class="data">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _check_class(value) -> str:
    text = str(value)
    if "failed" in text or "not run" in text:
        return " bad"
    if "untrusted" in text:
        return " warn"
    return ""


def _right_aligned(table: pd.DataFrame) -> list[bool]:
    numeric = table.attrs.get("numeric", [])
    return [c in numeric for c in table.columns]


def write(table: pd.DataFrame, numeric: pd.DataFrame, stem, title: str) -> dict:
    """stem.md, stem.html (a standalone page) and stem.csv (numbers, unformatted)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {ext: stem.parent / f"{stem.name}.{ext}" for ext in ("md", "html", "csv")}
    paths["md"].write_text(to_markdown(table, title))
    paths["html"].write_text(standalone_page(title, to_html(table)))
    numeric.to_csv(paths["csv"], index=False)
    return paths


def standalone_page(title: str, body: str) -> str:
    from pwbench.report.html import page

    return page(title, f"<h1>{html.escape(title)}</h1>{body}")


def rich_table(table: pd.DataFrame, title: str):
    from rich.markup import escape
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for column, right in zip(table.columns, _right_aligned(table)):
        out.add_column(column, justify="right" if right else "left", overflow="fold")
    for row in table.itertuples(index=False):
        style = "bold" if str(row[0]).startswith(TOTAL) else None
        out.add_row(*(escape(str(v)) for v in row), style=style)  # layer names: the user's
    return out
