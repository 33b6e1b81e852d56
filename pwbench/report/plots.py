"""Report figures (matplotlib object API, Agg backend; every figure closed once saved as PNG + SVG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from pwbench.analysis import roofline  # noqa: E402
from pwbench.report.runs import Run  # noqa: E402
from pwbench.units import format_seconds  # noqa: E402

KIND_COLOURS = {"pointwise": "#1f77b4", "depthwise": "#d62728", "full": "#2ca02c",
                "grouped": "#9467bd",
                # blocks (workloads/blocks.py), measured whole
                "bottleneck": "#17becf", "inverted_residual": "#ff7f0e", "separable": "#e377c2",
                "se": "#8c564b", "inception_branch": "#bcbd22"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
ROOF_COLOUR = "#444444"


def save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.svg"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _markers(backends) -> dict:
    return {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(backends)}


def _plain_log_ticks(axis) -> None:
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


# ---- roofline --------------------------------------------------------------------------------

def roofline_chart(run: Run, stem: Path) -> list[Path]:
    peaks, rec = run.peaks, run.records.dropna(subset=["median_s"])
    rec = rec[rec["median_s"] > 0]
    fig, ax = plt.subplots(figsize=(9, 5.8))
    lo = min(rec["intensity"].min() / 3, peaks.ridge / 30)  # room for the slope and its label
    hi = max(rec["intensity"].max(), peaks.ridge) * 3
    x = np.geomspace(lo, hi, 200)
    ax.loglog(x, roofline.attainable_flops_per_s(x, peaks.flops_per_s, peaks.bytes_per_s) / 1e9,
              color=ROOF_COLOUR, lw=2, zorder=1)
    markers = _markers(run.backends)
    for (kind, backend), rows in rec.groupby(["kind", "kernel"]):
        ax.scatter(rows["intensity"], rows["flops"] / rows["median_s"] / 1e9, s=46,
                   color=KIND_COLOURS.get(kind, "grey"), marker=markers[backend],
                   edgecolor="white", linewidth=0.6, alpha=0.9, zorder=3)
    achieved = rec["flops"] / rec["median_s"] / 1e9
    ax.set_ylim(min(achieved.min(), peaks.bytes_per_s * lo / 1e9) / 2, peaks.flops_per_s / 1e9 * 3)
    ax.set_xlim(lo, hi)
    _annotate_roofs(ax, peaks, lo)
    ax.set_xlabel("arithmetic intensity (FLOP per minimal byte moved)")
    ax.set_ylabel("achieved GFLOP/s (fp32)")
    ax.set_title(f"Roofline: suite {run.suite} on {run.label}", loc="left")
    _plain_log_ticks(ax.xaxis)
    _plain_log_ticks(ax.yaxis)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    _kind_backend_legend(ax, sorted(set(rec["kind"]), key=_kind_order), markers)
    return save(fig, stem)


def _annotate_roofs(ax, peaks, lo: float) -> None:
    top = peaks.flops_per_s / 1e9
    ax.plot([peaks.ridge], [top], "o", color=ROOF_COLOUR, ms=6, zorder=2)
    ax.annotate(f"ridge {peaks.ridge:.1f} FLOP/B", (peaks.ridge, top), xytext=(6, -14),
                textcoords="offset points", fontsize=8, color=ROOF_COLOUR)
    ax.annotate(f"compute roof {top:.0f} GFLOP/s\n({_short(peaks.flops_method)})", (peaks.ridge, top),
                xytext=(8, 6), textcoords="offset points", fontsize=8, color=ROOF_COLOUR)
    start = lo * 1.3
    ax.annotate(f"memory {peaks.bytes_per_s / 1e9:.1f} GB/s ({_short(peaks.bytes_method)})",
                (start, peaks.bytes_per_s * start / 1e9), xytext=(0, 5),
                textcoords="offset points", fontsize=8, color=ROOF_COLOUR,
                rotation=_screen_angle(ax, start, peaks.ridge, peaks.bytes_per_s / 1e9),
                rotation_mode="anchor")


def _screen_angle(ax, x0: float, x1: float, gb_per_s: float) -> float:
    """Angle on screen of the bandwidth slope y = x * bandwidth between x0 and x1."""
    (ax0, ay0), (ax1, ay1) = ax.transData.transform([(x0, x0 * gb_per_s), (x1, x1 * gb_per_s)])
    return float(np.degrees(np.arctan2(ay1 - ay0, ax1 - ax0)))


def _short(method: str) -> str:
    return method.split(" (")[0] if method.startswith("STREAM") else method.split(",")[0].split(" fp32")[0]


def _kind_order(kind: str) -> tuple:
    """Layer kinds in KIND_COLOURS order, then blocks by name."""
    order = list(KIND_COLOURS)
    return (order.index(kind), "") if kind in order else (len(order), kind)


def _kind_backend_legend(ax, kinds, markers: dict) -> None:
    kind_handles = [Line2D([], [], ls="", marker="o", color=KIND_COLOURS.get(k, "grey"), label=k)
                    for k in kinds]
    first = ax.legend(handles=kind_handles, title="kind", loc="upper left", fontsize=8,
                      title_fontsize=8, bbox_to_anchor=(1.01, 1.0))
    ax.add_artist(first)
    backend_handles = [Line2D([], [], ls="", marker=m, color="#555555", label=b)
                       for b, m in markers.items()]
    ax.legend(handles=backend_handles, title="backend", loc="upper left", fontsize=8,
              title_fontsize=8, bbox_to_anchor=(1.01, 0.6))


# ---- theory vs measured ----------------------------------------------------------------------

BLOCK_COLOURS = {"depthwise-separable": "#d62728", "bottleneck": "#1f77b4", "factored": "#7f7f7f",
                 "inverted_residual": "#ff7f0e", "inception_branch": "#bcbd22"}


def theory_scatter(frame: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Predicted FLOP ratio vs measured time ratio per pair and backend; y = x is 'all saved'."""
    frame = frame.dropna(subset=["time_ratio"])
    fig, ax = plt.subplots(figsize=(8.5, 6))
    values = np.concatenate([frame["flop_ratio"], frame["time_ratio"]])
    lo, hi = values.min() / 2, max(values.max() * 2, 1.5)
    ax.loglog([lo, hi], [lo, hi], color=ROOF_COLOUR, lw=1, ls="--")
    at = hi / 1.5  # upper right, where factored blocks (FLOP ratio well below 1) rarely are
    ax.text(at, at / 1.15, "y = x: time saved in proportion to FLOPs", fontsize=8,
            color=ROOF_COLOUR, ha="right", va="top", rotation=_screen_angle_xy(ax, lo, hi),
            rotation_mode="anchor")
    ax.axhline(1.0, color="#999999", lw=1, ls=":")
    ax.text(lo * 1.1, 1.04, "y = 1: factored as slow as full", fontsize=8, color="#777777",
            va="bottom")
    markers = _markers(dict.fromkeys(frame["backend"]))
    for (block, backend), rows in frame.groupby(["block", "backend"], sort=False):
        ax.scatter(rows["flop_ratio"], rows["time_ratio"], s=55, marker=markers[backend],
                   color=BLOCK_COLOURS.get(block, "grey"), edgecolor="white", zorder=3)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    labelled = frame.drop_duplicates("pair")
    _label_points(ax, labelled["flop_ratio"], labelled["time_ratio"],
                  [_short_pair(p) for p in labelled["pair"]])
    ax.set_xlabel("predicted FLOP ratio (factored / full, from the shapes)")
    ax.set_ylabel("measured time ratio (sum of factored medians / full median)")
    ax.set_title(title, loc="left")
    _plain_log_ticks(ax.xaxis)
    _plain_log_ticks(ax.yaxis)
    ax.grid(True, which="major", alpha=0.3)
    blocks = [Line2D([], [], ls="", marker="o", color=BLOCK_COLOURS.get(b, "grey"), label=b)
              for b in dict.fromkeys(frame["block"])]
    backends = [Line2D([], [], ls="", marker=m, color="#555555", label=b) for b, m in markers.items()]
    first = ax.legend(handles=blocks, title="block (colour)", loc="lower right", fontsize=8,
                      title_fontsize=8)
    ax.add_artist(first)
    ax.legend(handles=backends, title="backend (marker)", loc="lower right", fontsize=8,
              title_fontsize=8, bbox_to_anchor=(1.0, 0.2))
    return save(fig, stem)


def _screen_angle_xy(ax, lo: float, hi: float) -> float:
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    (x0, y0), (x1, y1) = ax.transData.transform([(lo, lo), (hi, hi)])
    return float(np.degrees(np.arctan2(y1 - y0, x1 - x0)))


def _short_pair(name: str) -> str:
    return (name.replace("mobilenetv2.features.", "mbv2.f")
            .replace("efficientnet_b0.features.", "effb0.f").replace("resnet50.", "rn50.")
            .replace("inception_v3.", "incv3."))


def _label_points(ax, xs, ys, texts, fontsize: float = 7) -> None:
    """Label each point to its right; a label that would cover one placed before it moves up,
    joined to its point by a thin line. Call once the axis limits are final."""
    fig = ax.figure
    px_per_pt = fig.dpi / 72
    line_px, gap_px = 1.25 * fontsize * px_per_pt, 5 * px_per_pt
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    points = ax.transData.transform(np.column_stack([xs, ys]))
    placed: list[tuple[float, float, float]] = []  # (left, right, baseline) in pixels
    for i in np.argsort(points[:, 1], kind="stable"):
        x, y = points[i]
        left, right = x + gap_px, x + gap_px + 0.6 * fontsize * px_per_pt * len(texts[i])
        base = y + 2 * px_per_pt
        while any(abs(base - b) < line_px and left < r and right > l for l, r, b in placed):
            base += line_px
        placed.append((left, right, base))
        lift = (base - y) / px_per_pt
        ax.annotate(texts[i], (xs[i], ys[i]), xytext=(5, lift), textcoords="offset points", fontsize=fontsize,
                    color="#333333", va="bottom",
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="#999999", shrinkA=0, shrinkB=3)
                    if lift > 1.2 * fontsize else None)


# ---- fusion gain -----------------------------------------------------------------------------

def fusion_bars(frame: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Per block: for each backend the block's median and the sum of its layers' medians, side by
    side on a log scale (backends differ by orders of magnitude: untuned vs tuned)."""
    frame = frame.reset_index(drop=True)
    backends = list(dict.fromkeys(frame["backend"]))
    blocks = list(dict.fromkeys(frame["block"]))
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(blocks) * len(backends) + 1.8))
    height = 0.8 / len(backends)
    for i, block in enumerate(blocks):
        for j, backend in enumerate(backends):
            row = frame[(frame["block"] == block) & (frame["backend"] == backend)]
            if row.empty:
                continue
            y = i + j * height
            for value, offset, hatch in ((row["block_s"].iloc[0], 0.0, None),
                                         (row["layers_s"].iloc[0], height / 2, "///")):
                if np.isfinite(value):
                    ax.barh(y + offset, value * 1e3, height=height / 2, color=colours[backend],
                            hatch=hatch, edgecolor="white" if hatch is None else "black", lw=0.3)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    middle = ((len(backends) - 1) * height + height / 2) / 2  # of a block's bars
    ax.set_yticks([i + middle for i in range(len(blocks))], [_short_pair(b) for b in blocks],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median (ms, log scale): solid = block whole, hatched = sum of its layers alone")
    ax.set_title(title, loc="left")
    ax.grid(True, axis="x", which="major", alpha=0.3)
    ax.legend(handles=[Line2D([], [], ls="", marker="s", color=colours[b], label=b) for b in backends],
              title="backend", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(fig, stem)


# ---- tuning curves ---------------------------------------------------------------------------

def tuning_curves(curves: pd.DataFrame, baseline_s: float | None, baseline: str, title: str,
                  stem: Path) -> list[Path]:
    """Best latency so far vs trials and vs tuning seconds, one line per tuned backend."""
    fig, (by_trial, by_time) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for backend, rows in curves.groupby("backend", sort=False):
        rows = rows.sort_values("trial")
        by_trial.step(rows["trial"], rows["best_s"] * 1e3, where="post", label=backend)
        by_time.step(rows["elapsed_s"], rows["best_s"] * 1e3, where="post", label=backend)
    for ax, xlabel in ((by_trial, "trials"), (by_time, "tuning time (s)")):
        if baseline_s:
            ax.axhline(baseline_s * 1e3, color="black", ls="--", lw=1, label=f"{baseline} median")
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    by_trial.set_ylabel("best latency so far (ms)")
    by_trial.set_ylim(bottom=0)
    by_time.legend(fontsize=8, loc="upper right")
    fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    fig.tight_layout()
    return save(fig, stem)


# ---- hardware selection ----------------------------------------------------------------------

def latency_by_kind(entries: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Network latency per machine/backend as bars stacked by layer kind, fastest on top."""
    kinds = [k for k in KIND_COLOURS if f"kind_{k}_s" in entries]
    names = list(entries["machine"] + " · " + entries["backend"])
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(names) + 1.6))
    left = np.zeros(len(names))
    y = np.arange(len(names))[::-1]
    for kind in kinds:
        ms = entries[f"kind_{kind}_s"].fillna(0).to_numpy() * 1e3
        ax.barh(y, ms, left=left, color=KIND_COLOURS[kind], label=kind, height=0.6)
        left += ms
    for yi, total in zip(y, entries["latency_s"]):
        text = "incomplete" if np.isnan(total) else format_seconds(total)
        ax.text(left[list(y).index(yi)], yi, f"  {text}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("network latency (ms, each layer's median x its count)")
    ax.set_xlim(0, left.max() * 1.18 if left.max() > 0 else 1)
    ax.set_title(title, loc="left")
    ax.legend(title="kind", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(True, axis="x", alpha=0.3)
    return save(fig, stem)


def pareto(entries: pd.DataFrame, costs: list[tuple[str, str]], title: str, stem: Path) -> list[Path]:
    """Throughput vs each cost (USD/hour, watts); the Pareto front (nothing cheaper and faster)
    is joined by a line."""
    from pwbench.report.selection import pareto_front

    fig, axes = plt.subplots(1, len(costs), figsize=(5.2 * len(costs), 4.4), squeeze=False)
    for ax, (column, label) in zip(axes[0], costs):
        data = entries.dropna(subset=[column, "throughput_per_s"])
        front = data[pareto_front(data, column)].sort_values(column)
        ax.plot(front[column], front["throughput_per_s"], color="#2ca02c", lw=1.5, zorder=1)
        ax.scatter(front[column], front["throughput_per_s"], s=140, facecolor="none",
                   edgecolor="#2ca02c", lw=2, zorder=2, label="Pareto front")
        ax.scatter(data[column], data["throughput_per_s"], s=45, color="#1f77b4", zorder=3)
        for row in data.itertuples():
            ax.annotate(f"{row.machine} · {row.backend}", (getattr(row, column), row.throughput_per_s),
                        xytext=(5, 4), textcoords="offset points", fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("throughput (inferences/s)")
        ax.set_xlim(0, data[column].max() * 1.35)
        ax.set_ylim(0, data["throughput_per_s"].max() * 1.2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    fig.tight_layout()
    return save(fig, stem)
