"""A comparison (analysis/compare.py) as text: its summary line, table cells, Markdown for a CI
comment, and JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

from pwbench.analysis.compare import Comparison, Row
from pwbench.analysis.stats import CONFIDENCE
from pwbench.units import format_seconds

COLUMNS = ("verdict", "layer", "backend", "base", "new", "change", "80 % interval", "note")


def changed(result: Comparison) -> list[Row]:
    return [r for r in result.rows if r.verdict != "same"]


def _pct(ratio: float) -> str:
    return "-" if math.isnan(ratio) else f"{(ratio - 1) * 100:+.1f} %"


def _ci(r: Row) -> str:
    return "-" if math.isnan(r.ci_low) else f"{_pct(r.ci_low)} .. {_pct(r.ci_high)}"


def summary_line(result: Comparison, accept_missing: bool = False) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in sorted(result.counts().items()))
    head = (f"{len(result.regressions)} regression(s)" if result.regressions else "no regression")
    if result.missing and not accept_missing:
        head += f", {len(result.missing)} kernel(s) of BASE not measured by NEW"
    timed = any(not r.counted for r in result.rows)
    rules = []
    if timed:
        spread = (f"the spread between {result.base_runs} baseline runs in it"
                  if result.base_runs > 1 else "one baseline run: no spread between runs in it")
        rules.append(f"threshold {result.threshold:.0%}, {CONFIDENCE:.0%} interval, {spread}")
    if any(r.counted for r in result.rows):
        rules.append(f"instruction counts: threshold {result.count_threshold:.1%} on the ratio")
    return f"{head}: {len(result.rows)} kernels, {counts} ({'; '.join(rules)})"


def missing_line(result: Comparison) -> str:
    """What a gate says when NEW lacks kernels of BASE (exit 1 unless accepted)."""
    return (f"{len(result.missing)} of {len(result.rows)} kernels of BASE were not measured by "
            "NEW: a gate does not pass on missing data (--accept-missing to compare what is "
            "there)")


def cells(r: Row) -> list[str]:
    if r.counted:  # instructions per call; no interval (a plain threshold)
        return [r.verdict, r.layer, r.backend, _instructions(r.base_instructions),
                _instructions(r.new_instructions), _pct(r.ratio), "-", r.note]
    return [r.verdict, r.layer, r.backend, format_seconds(r.base_median_s),
            format_seconds(r.new_median_s), _pct(r.ratio), _ci(r), r.note]


def _instructions(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f} instr"


def to_markdown(result: Comparison, accept_missing: bool = False) -> str:
    lines = [f"**pwbench compare** `{result.base}` -> `{result.new}`: "
             f"{summary_line(result, accept_missing)}", ""]
    lines += [f"> warning: {w}" for w in result.warnings]
    rows = changed(result)
    if rows:
        lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_json(result: Comparison) -> str:
    data = {"base": result.base, "new": result.new, "threshold": result.threshold,
            "count_threshold": result.count_threshold, "base_runs": result.base_runs,
            "confidence": CONFIDENCE, "regressions": len(result.regressions),
            "missing": len(result.missing), "counts": result.counts(),
            "warnings": result.warnings,
            "rows": [asdict(r) | {"regression": r.regression} for r in result.rows]}
    return json.dumps(_no_nan(data), indent=2)


def _no_nan(value):
    """NaN (a kernel not timed) as JSON null, which every JSON reader accepts."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value
