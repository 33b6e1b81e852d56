"""What a person sees in the terminal: progress during a run, tables after it."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pwbench import backends, targets
from pwbench.measure import runner
from pwbench.workloads import suites

console = Console()
if not console.is_terminal:  # logs and CI: do not fold layer names into an 80-column box
    console.width = 160
CHECK_STYLE = {"passed": "green", "failed": "bold red", "untrusted": "yellow", "": "red"}


def format_seconds(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def run_with_progress(plan: runner.Plan):
    runner.ensure_peaks(plan, lambda: console.print(
        "measuring this machine's peak FLOP/s and memory bandwidth (a few seconds, once: cached)"))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{plan.suite.name} on {plan.target.name}",
                                 total=len(plan.specs) * len(plan.modules))

        def on_row(row, done, total):
            progress.update(task, completed=done,
                            description=f"{plan.suite.name}: {row['layer'][:40]} [{row['backend']}]")
            if row["noisy"]:
                progress.console.print(f"[yellow]warning:[/] {_who(row)}: "
                                       f"IQR is over 10 % of the median; the machine may be busy")
            if row.get("tuning"):
                progress.console.print(f"{_who(row)}: {_tuning_note(row)}")

        tuned = plan.modules.get("tvm-tuned")
        if tuned is not None:  # tuning a layer takes a while: show its trials as they finish
            tuned.on_progress = lambda spec, trials, asked, best_s: progress.update(
                task, description=f"tuning {spec.label[:40]}: {trials}/{asked} trials, "
                                  f"best {format_seconds(best_s)}")
        return runner.execute(plan, on_row)


def _who(row: dict) -> str:
    """'layer [backend]', escaped: rich would take '[backend]' for a style tag and drop it."""
    return escape(f"{row['layer']} [{row['backend']}]")


def _tuning_note(row: dict) -> str:
    if row["tuning"] == "database":
        return (f"schedule from the tuning database ({row['tuning_trials']} trials, tuned in "
                f"{row['tuning_s']:.0f} s earlier), verified before timing")
    return f"tuned now: {row['tuning_trials']} trials in {row['tuning_s']:.0f} s, saved to the database"


def summary(rows: list[dict]) -> None:
    table = Table(title="pwbench results", title_justify="left")
    for col, justify in (("layer", "left"), ("kind", "left"), ("backend", "left"),
                         ("median", "right"), ("IQR", "right"), ("GFLOP/s", "right"),
                         ("% of roof", "right"), ("check", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for r in rows:
        check = r["check"] or "not run"
        gflops = "-" if math.isnan(r["gflops"]) else f"{r['gflops']:.1f}"
        roof = r.get("pct_of_roof", math.nan)
        table.add_row(r["layer"], r["kind"], r["backend"], format_seconds(r["median_s"]),
                      format_seconds(r["iqr_s"]), gflops, "-" if math.isnan(roof) else f"{roof:.0f} %",
                      f"[{CHECK_STYLE[r['check']]}]{check}[/]")
    console.print(table)
    for r in rows:
        if r["error"]:
            console.print(f"[red]{_who(r)}:[/] {escape(r['error'])}")
    _above_roof_note(rows)


def _above_roof_note(rows: list[dict]) -> None:
    """A time below the roofline bound means the bound is wrong for that layer: say why it can be."""
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


def listing(what: str) -> None:
    table = Table(title=what, title_justify="left")
    if what == "suites":
        for col in ("suite", "layers", "GFLOPs (weighted)", "description"):
            table.add_column(col)
        for name in suites.builtin_suites():
            s = suites.load(name)
            table.add_row(name, str(len(s.layers)), f"{s.gflops:.2f}", s.description)
    elif what == "backends":
        for col in ("backend", "targets", "status", "description"):
            table.add_column(col)
        for name, info in backends.REGISTRY.items():
            reason = backends.unavailable_reason(name)
            status = "[green]available[/]" if reason is None else f"[red]unavailable:[/] {reason}"
            table.add_row(name, ", ".join(info.families), status, info.description)
    else:
        for col in ("target", "family", "description"):
            table.add_column(col)
        for t in targets.TARGETS.values():
            table.add_row(t.name, t.family, t.description)
    console.print(table)


def peaks_summary(peaks) -> None:
    table = Table(title=f"peaks of this machine: target {peaks.target}, {peaks.threads} thread(s), "
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
