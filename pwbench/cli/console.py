"""What a person sees in the terminal: progress during a run, tables after it."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pwbench import samples
from pwbench.units import format_seconds

console = Console()
if not console.is_terminal:  # logs and CI: do not fold layer names into an 80-column box
    console.width = 160
CHECK_STYLE = {"passed": "green", "failed": "bold red", "untrusted": "yellow", "skipped": "dim",
               "": "red"}


def warn(text: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(text)}")


class RunProgress:
    """A run's progress bar: the runner's Watcher and the backends' Events."""

    def __init__(self):
        self.bar = self.task = None

    def run(self, plan):
        from pwbench.pipeline import runner
        from pwbench.targets import peaks

        for warning in plan.warnings:
            warn(warning)
        runner.ensure_peaks(plan, lambda: console.print(
            f"measuring the peak FLOP/s and memory bandwidth of {plan.target.where} (a few seconds, "
            f"{peaks.cache_note()})"))
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as self.bar:
            try:
                return runner.execute(plan, self)
            finally:
                self.bar = None

    def stage(self, text: str, total: int) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task(text, total=total)
            self.stage_text = text

    def step(self, text: str, row: dict | None = None) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, advance=1, description=f"{self.stage_text}: {escape(text[:50])}")
        if row is not None and row.get("error"):
            self.note(f"{text}: {row['error']}")

    def progress(self, text: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, description=f"{self.stage_text}: {escape(text[:60])}")

    def note(self, text: str) -> None:
        (self.bar.console if self.bar is not None else console).print(escape(text))


def who(row: dict) -> str:
    """'layer [backend]', escaped: rich would take '[backend]' for a style tag and drop it."""
    return escape(f"{row['layer']} [{row['backend']}]")


def summary(rows: list[dict]) -> None:
    from pwbench.store.results import counted

    if any(counted(r) or r.get("clock") == "instructions" for r in rows):
        return count_summary(rows)
    table = Table(title="pwbench results", title_justify="left")
    layouts = len({r.get("layout") for r in rows}) > 1
    for col, justify in (("layer", "left"), ("kind", "left"), ("backend", "left"),
                         ("median", "right"), ("IQR", "right"), ("processes", "right"),
                         ("GFLOP/s", "right"), ("% of roof", "right"), ("check", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for r in rows:
        check = r["check"] or "not run"
        gflops = "-" if math.isnan(r["gflops"]) else f"{r['gflops']:.1f}"
        roof = r.get("pct_of_roof", math.nan)
        name = " ".join(x for x in (r["backend"], r.get("variant") or "",
                                    r.get("layout", "") if layouts else "") if x)
        table.add_row(escape(r["layer"]), escape(r["kind"]), escape(name), format_seconds(r["median_s"]),
                      format_seconds(r["iqr_s"]), _processes(r), gflops,
                      "-" if math.isnan(roof) else f"{roof:.0f} %",
                      f"[{CHECK_STYLE[r['check']]}]{check}[/]")
    console.print(table)
    _errors(rows)
    _above_roof_note(rows)
    throttled = [r for r in rows if r.get("throttled")]
    if throttled:
        console.print(f"[yellow]note:[/] {len(throttled)} kernel(s) were timed while the GPU's "
                      "clocks dropped or were held down (the throttled and gpu_slowdown columns): "
                      "their times are not steady-state")


def _errors(rows: list[dict]) -> None:
    """Each row's error, one line (dim for a workload a backend skips)."""
    for r in rows:
        if r["error"]:
            style = "dim" if r["check"] == "skipped" else "red"
            console.print(f"[{style}]{who(r)}:[/] {escape(r['error'])}")


def count_summary(rows: list[dict]) -> None:
    """The instruction clock's table: counts per call, no times (measure/instructions.py)."""
    table = Table(title="pwbench results: instructions per call (callgrind)", title_justify="left")
    for col in ("layer", "kind", "backend", "instructions", "spread", "L1 misses", "LL misses",
                "est. cycles", "instr/FLOP", "check"):
        table.add_column(col, justify="left" if col in ("layer", "kind", "backend", "check")
                         else "right", overflow="fold")
    for r in rows:
        check = r["check"] or "not run"
        values = r.get("samples_instructions")
        spread = (f"{100 * (max(values) - min(values)) / r['instructions']:.2f} %"
                  if values is not None and len(values) and r["instructions"] else "-")
        table.add_row(escape(r["layer"]), escape(r["kind"]), escape(r["backend"]),
                      _count(r.get("instructions")), spread,
                      _count(r.get("l1_misses")), _count(r.get("ll_misses")),
                      _count(r.get("estimated_cycles")), num(r.get("instructions_per_flop"), "{:.2f}"),
                      f"[{CHECK_STYLE[r['check']]}]{check}[/]")
    console.print(table)
    _errors(rows)
    console.print("[dim]spread: (max - min) / median over the counted calls of every process; "
                  "est. cycles = Ir + 10 L1 misses + 100 LL misses (KCachegrind's estimate)[/]")


def _count(value) -> str:
    return f"{value:,.0f}" if real(value) else "-"


def _processes(row: dict) -> str:
    """How many processes measured the kernel, and how far apart their medians were."""
    n = row.get("n_processes", 0)
    if n < 2:
        return str(n)
    medians = samples.process_medians(row["samples_s"], row["samples_process"])
    return f"{n}, spread {100 * (medians.max() / medians.min() - 1):.0f} %"


def _above_roof_note(rows: list[dict]) -> None:
    """A time below the roofline bound means the bound is wrong for that layer: say why it can be
    (not for an emulated board, whose times and peaks mean nothing)."""
    rows = [r for r in rows if not r.get("emulated")]
    above = {bound: [r for r in rows if r.get("bound") == bound and r.get("pct_of_roof", 0) > 110]
             for bound in ("compute", "memory")}
    if above["compute"]:
        console.print(f"[yellow]note:[/] {len(above['compute'])} compute-bound kernel(s) beat the "
                      "measured FLOP/s peak: the peaks were probably measured on a busy machine "
                      "(run 'pwbench peaks --refresh' when it is quiet), or the library does fewer "
                      "FLOPs than direct convolution (Winograd / FFT)")
    if above["memory"]:
        console.print(f"[yellow]note:[/] {len(above['memory'])} memory-bound kernel(s) beat the "
                      "DRAM bandwidth roof: their working set fits in cache, so the DRAM roof "
                      "does not bound them")


def real(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def num(value, fmt: str = "{:.0f}") -> str:
    return fmt.format(value) if real(value) else "-"


def peaks_summary(peaks) -> None:
    table = Table(title=f"peaks: target {peaks.target}, {peaks.threads} thread(s), "
                        f"{peaks.source}", title_justify="left")
    for col, justify in (("roof", "left"), ("value", "right"), ("method", "left")):
        table.add_column(col, justify=justify)
    for method, value in peaks.flops_candidates.items():
        best = " (used)" if method == peaks.flops_method else ""
        table.add_row("compute" + best, f"{value / 1e9:.1f} GFLOP/s", method)
    for method, value in peaks.bytes_candidates.items():
        best = " (used)" if method == peaks.bytes_method else ""
        table.add_row("memory" + best, f"{value / 1e9:.1f} GB/s", method)
    if not peaks.flops_candidates:  # peaks from a file
        table.add_row("compute", f"{peaks.flops_per_s / 1e9:.1f} GFLOP/s", peaks.flops_method)
        table.add_row("memory", f"{peaks.bytes_per_s / 1e9:.1f} GB/s", peaks.bytes_method)
    table.add_row("ridge", f"{peaks.ridge:.1f} FLOP/B", "compute roof / bandwidth")
    if peaks.physical_bound_flops_per_s:
        table.add_row("physical bound", f"{peaks.physical_bound_flops_per_s / 1e9:.0f} GFLOP/s",
                      "cores x fp32 FMAs per cycle x 2 x 6 GHz (a sanity ceiling)")
    console.print(table)
    for note in peaks.notes:
        console.print(f"[yellow]note:[/] {note}")


def speedups(rows: list[dict]) -> None:
    """TVM vs the best library per layer and per kind, like for like and best vs best, and the
    suite's totals per stack (report/speedups.py), when the run timed both sides."""
    import pandas as pd

    from pwbench.report import speedups as sp
    from pwbench.report import tables

    if not rows:
        return
    per_layer = sp.per_layer(pd.DataFrame(rows))
    if per_layer.empty:
        return
    shown = tables.display(per_layer, sp.layer_columns())
    console.print(tables.rich_table(shown, "TVM vs the best library per layer (> 1: TVM faster; "
                                           "verified rows only)"))
    kinds = sp.by_kind(per_layer)
    console.print(tables.rich_table(tables.display(kinds, sp.kind_columns()),
                                    "TVM vs the best library per kind (geomean)"))
    console.print("library: torch eager, torch-frozen and onnxruntime, whichever is fastest; like "
                  "for like: the same layout in and out on both sides; best vs best: each side's "
                  "fastest NCHW or NHWC row; blocked end to end is shown, never counted")
    totals = sp.network_totals(per_layer)
    if totals.get("layers"):
        console.print(f"suite total (each layer x its count, {totals['convs']} convs, "
                      f"{totals['layers']} of {totals['of']} layers timed on both sides): the "
                      f"library's best {format_seconds(totals['library_s'])}, TVM's best "
                      f"{format_seconds(totals['tvm_s'])}: TVM takes "
                      f"{1 / totals['ratio']:.2f}x the library's time", highlight=False)
