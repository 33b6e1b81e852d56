"""`pwbench report RUN_DIR...`: latency tables, roofline charts, theory vs measured, tuning curves
and hardware selection, written as files (Markdown/HTML/CSV tables, PNG/SVG figures) and linked
from one offline index.html. Modules: runs (loading), tables, theory, selection, curves, costs,
fusion, plots, html; this one puts them together."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from pwbench.errors import UserError
from pwbench.report import (
    costs,
    curves,
    fusion,
    html,
    runs,
    selection,
    speedups,
    tables,
    theory,
)
from pwbench.units import format_seconds

__all__ = ["Built", "build", "costs"]


@dataclass
class Built:
    index: Path
    files: list[Path]
    warnings: list[str]


def build(run_dirs, out=None, peaks_file=None, baseline: str | None = None,
          costs: costs.Costs | None = None, show=None) -> Built:
    """`show`, when given, receives each table as a rich renderable (the CLI prints them).
    `baseline`: a backend (or backend and variant) some run measured; None: torch where there."""
    loaded = runs.load(run_dirs, peaks_file)
    _check_baseline(baseline, loaded)
    baseline = baseline or "torch"
    groups = selection.by_suite(loaded)
    prices = costs or globals()["costs"].Costs({})
    prices.check_used(loaded)
    out = _prepare(Path(out) if out else _default_out(loaded))
    from pwbench.report import (
        plots,  # matplotlib only once the input is known to be good
    )
    writer = _Writer(out, plots, show)
    sections = [writer.overview(loaded)]
    for run in loaded:
        sections.append(writer.run_section(run, tables.baseline_of(run, baseline)))
    warnings = [w for r in loaded for w in r.warnings]
    for suite, members in groups.items():
        if sum(len(r.backends) for r in members) > 1:
            sections.append(writer.selection_section(suite, members, prices))
            emulated = selection.emulated_warning(members)
            if emulated:
                warnings.append(f"hardware selection of {suite}: {emulated}")
    title = "pwbench report: " + ", ".join(dict.fromkeys(r.suite for r in loaded))
    intro = (f"{len(loaded)} run(s); times are per-call medians, network totals weight each layer "
             f"by its count. Generated {_now()}.")
    index = html.write_index(out, title, intro, sections)
    return Built(index, [index, *writer.files], warnings)


def _default_out(loaded) -> Path:
    if len(loaded) == 1:
        return loaded[0].dir / "report"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("results") / f"report_{stamp}"


def _check_baseline(baseline: str | None, loaded: list) -> None:
    measured = list(dict.fromkeys(b for r in loaded for b in r.backends))
    if baseline is not None and baseline not in measured:
        raise UserError(f"--baseline {baseline!r}: no run measured it; choose one of "
                        f"{', '.join(measured)}")


def _prepare(out: Path) -> Path:
    try:
        for sub in ("figures", "tables"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write the report to {out}: {exc.strerror or exc}; "
                        "choose another --out") from None
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


class _Writer:
    """Writes each table and figure once and returns the HTML that shows it."""

    def __init__(self, out: Path, plots, show):
        self.out, self.plots, self.show = out, plots, show
        self.files: list[Path] = []

    def _table(self, numeric, columns: dict, name: str, title: str, caption: str = "",
               echo: bool = True) -> str:
        shown = tables.display(numeric, columns)
        paths = tables.write(shown, numeric, self.out / "tables" / name, title)
        self.files += paths.values()
        if self.show and echo:
            self.show(tables.rich_table(shown, title))
        return html.table(tables.to_html(shown, caption), paths.values(), self.out, title)

    def _figure(self, paths, caption: str) -> str:
        self.files += paths
        return html.figure(paths, self.out, caption)

    def overview(self, loaded) -> html.Section:
        section = html.Section("Runs and machine peaks", "runs")
        rows = [_run_facts(r) for r in loaded]
        import pandas as pd

        frame = pd.DataFrame(rows)
        columns = {c: (c, "text") for c in frame.columns}
        columns |= {"peak GFLOP/s": ("peak GFLOP/s", "gflops"), "peak GB/s": ("peak GB/s", "gflops"),
                    "ridge FLOP/B": ("ridge FLOP/B", "gflops")}
        section.add(self._table(frame, columns, "runs", "Runs", echo=False))
        section.add(html.notes(_peak_notes(loaded)))
        return section

    def run_section(self, run: runs.Run, baseline: str) -> html.Section:
        section = html.Section(f"{run.suite} on {run.label}", f"run-{run.slug}")
        if run.meta.get("status") != "complete":
            section.add(html.paragraph(f"This run is {run.meta.get('status', 'unknown')}: only the "
                                       "rows it finished are shown.", "muted"))
        latency = tables.latency(run, baseline)
        section.add(self._table(latency, tables.latency_columns(run, baseline),
                                f"latency_{run.slug}", f"Latency: {run.suite} on {run.label}",
                                f"batch {', '.join(map(str, sorted(set(run.records['batch']))))}"
                                + (f"; speedup = {baseline} median / backend median"
                                   if len(run.backends) > 1 else "")))
        section.parts += self._speedups(run)
        if run.peaks:
            section.add(self._figure(self.plots.roofline_chart(run, self.out / "figures" / f"roofline_{run.slug}"),
                                     "Roofline: each layer's achieved GFLOP/s at its arithmetic "
                                     "intensity, under the measured compute roof and bandwidth slope."))
        else:
            section.add(html.paragraph("No peaks recorded for this run: no roofline (give them with "
                                       "--peaks FILE).", "muted"))
        resources = tables.resources(run)
        if resources is not None:
            bundle = run.meta.get("kernel_bundle")
            section.add(self._table(resources, tables.RESOURCE_COLUMNS, f"resources_{run.slug}",
                                    f"Kernel resources: {run.suite} on {run.label}",
                                    (f"from kernel bundle {bundle}; " if bundle else "")
                                    + "per kernel, its first device function as ptxas reported "
                                      "it; occupancy is theoretical (blocks per SM x warps / the "
                                      "SM's maximum)"))
        throttled = tables.throttled(run)
        if throttled:
            section.add(html.paragraph(throttled, "muted"))
        if fusion.has_blocks(run):
            section.add(self._fusion(run))
        if theory.has_pairs(run):
            section.add(self._theory(run))
        section.parts += self._tuning(run, baseline)
        return section

    def _speedups(self, run: runs.Run) -> list[str]:
        """TVM vs the best library, like for like and best vs best, and the suite's totals per
        stack (report/speedups.py), when both sides ran."""
        per_layer = speedups.per_layer(run.records)
        if per_layer.empty:
            return []
        note = ("> 1: TVM faster. The library side is the fastest of torch eager, torch-frozen and "
                "onnxruntime (named). Like for like: the same layout in and out on both sides; "
                "best vs best: each side's fastest NCHW or NHWC row; blocked end to end shown, "
                "never counted; verified rows only.")
        parts = [self._table(per_layer, speedups.layer_columns(), f"speedups_{run.slug}",
                             f"TVM vs the best library per layer: {run.suite} on {run.label}", note),
                 self._table(speedups.by_kind(per_layer), speedups.kind_columns(),
                             f"speedups_by_kind_{run.slug}",
                             f"TVM vs the best library per kind (geomean): {run.suite} on {run.label}")]
        totals = speedups.network_totals(per_layer)
        if totals.get("layers"):
            parts.append(html.paragraph(
                f"Suite total, each layer times its count ({totals['convs']} convs, "
                f"{totals['layers']} of {totals['of']} layers timed on both sides): the library's "
                f"best {format_seconds(totals['library_s'])}, TVM's best "
                f"{format_seconds(totals['tvm_s'])}; TVM takes {1 / totals['ratio']:.2f}x the "
                "library's time."))
        return parts

    def _theory(self, run: runs.Run) -> str:
        frame = theory.pairs(run)
        if frame.empty:
            return html.paragraph("Layers carry pairs, but no pair has both a factored and a full side.")
        table = self._table(theory.table(frame), theory.columns(frame), f"theory_{run.slug}",
                            f"Theory vs measured: {run.suite} on {run.label}",
                            "ratios are factored / full; FLOP saving kept = (1 - time ratio) / (1 - FLOP ratio)")
        paths = self.plots.theory_scatter(frame, f"Predicted FLOP ratio vs measured time ratio ({run.label})",
                                          self.out / "figures" / f"theory_{run.slug}")
        caption = ("Below the y = x line a factored block saves more time than FLOPs; above it, "
                   "less. Above y = 1 the factored block is slower than the full conv.")
        return table + html.notes(theory.summary(frame, run)) + self._figure(paths, caption)

    def _fusion(self, run: runs.Run) -> str:
        frame = fusion.gains(run)
        if frame.empty:
            return html.paragraph("Layers name blocks (part_of), but no block was measured whole.")
        table = self._table(frame, fusion.COLUMNS, f"fusion_{run.slug}",
                            f"Fusion gain: {run.suite} on {run.label}",
                            "each block measured whole next to the sum of its convs measured alone "
                            "on the same backend; gain = sum of the layers / the block")
        paths = self.plots.fusion_bars(frame, f"Blocks whole vs their layers one by one ({run.label})",
                                       self.out / "figures" / f"fusion_{run.slug}")
        caption = ("Per block and backend: the block's median (solid) and the sum of its layers' "
                   "medians (hatched). A shorter solid bar: the block gains from running as a unit.")
        return table + html.notes(fusion.summary(frame)) + self._figure(paths, caption)

    def _tuning(self, run: runs.Run, baseline: str) -> list[str]:
        data = curves.read(run)
        if data is None:
            return []
        parts = ["<h3>Tuning curves</h3>"]
        data = data.assign(variant=data["variant"].fillna("") if "variant" in data else "")
        several = len(run.layouts) > 1
        for (spec_id, layer, variant), rows in data.groupby(["spec_id", "layer", "variant"],
                                                            sort=False):
            layout = spec_id.rsplit("_", 1)[-1].upper() if several else ""
            layer = " ".join(x for x in (layer, layout, variant) if x)
            base = curves.baseline_seconds(run, spec_id, baseline)
            stem = self.out / "figures" / f"tuning_{run.slug}_{runs.slug(layer)}"
            paths = self.plots.tuning_curves(rows, base, baseline, f"Tuning {layer} on {run.label}", stem)
            parts.append(self._figure(paths, f"{layer}: best latency so far vs trials and vs "
                                             f"seconds; dashed: the {baseline} median"
                                             + ("" if base else f" (no {baseline} time recorded)")))
        return parts

    def selection_section(self, suite: str, members, prices) -> html.Section:
        section = html.Section(f"Hardware selection: {suite}", f"select-{runs.slug(suite)}")
        emulated = selection.emulated_warning(members)
        if emulated:  # before the ranking, not after it
            section.add(html.paragraph(f"Warning: {emulated}.", "warning"))
            if self.show:
                self.show(f"[yellow]warning:[/] {emulated}")
        entries = selection.entries(members, prices)
        name = runs.slug(suite)
        section.add(self._table(entries, selection.entries_columns(entries), f"selection_{name}",
                                f"Network latency per machine and backend: {suite}",
                                "ranked by network latency (fastest first); throughput = batch / latency"))
        won = selection.winners(entries)
        section.add(self._table(won, selection.winners_columns(entries), f"winners_{name}",
                                f"Fastest per layer kind: {suite}", "time of that kind's layers, x count"))
        section.add(self._figure(self.plots.latency_by_kind(entries, f"Network latency by layer kind: {suite}",
                                                            self.out / "figures" / f"selection_{name}"),
                                 "Each bar is one machine and backend; segments are the time spent in each layer kind."))
        cost_axes = [(c, label) for c, label in (("price_per_hour", "price (USD/hour)"), ("watts", "power (W)"))
                     if entries[c].notna().any()]
        if cost_axes:
            section.add(self._figure(self.plots.pareto(entries, cost_axes, f"Throughput vs cost: {suite}",
                                                       self.out / "figures" / f"pareto_{name}"),
                                     "Machines on the green line are Pareto-optimal: no other is both cheaper and faster."))
        return section


def _run_facts(run: runs.Run) -> dict:
    m, p = run.meta, run.peaks
    return {"run": run.label, "directory": run.dir.name, "suite": run.suite,
            "cpu": f"{m.get('cpu_model', '?')} ({m.get('cores', '?')} cores)",
            "target": m.get("target", ""), "threads": str(m.get("threads", "")),
            "backends": ", ".join(run.backends), "utc": m.get("utc", ""),
            "commit": str(m.get("git_commit", ""))[:12],
            "peak GFLOP/s": p.flops_per_s / 1e9 if p else float("nan"),
            "peak GB/s": p.bytes_per_s / 1e9 if p else float("nan"),
            "ridge FLOP/B": p.ridge if p else float("nan")}


def _peak_notes(loaded) -> list[str]:
    notes = []
    for run in loaded:
        p = run.peaks
        if p is None:
            notes.append(f"{run.label}: no peaks recorded")
            continue
        origin = {"measured": f"measured {p.utc}",
                  "cache": f"measured {p.utc}, reused from the peaks cache"}.get(p.source, p.source)
        notes.append(f"{run.label}: compute roof from {p.flops_method}; bandwidth from "
                     f"{p.bytes_method}; {origin}" + "".join(f"; {n}" for n in p.notes))
    return notes
