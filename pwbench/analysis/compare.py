"""`pwbench compare BASE NEW`: a regression verdict per kernel, and an exit status CI can gate on.

Statistics (why this test). Timing noise is multiplicative and right-skewed (interrupts, frequency
changes, a busy neighbour), so every comparison is made on log(time): a slowdown is a shift of the
log-time distribution, and a ratio of times is a difference of logs. For that shift we use the
Hodges-Lehmann estimate (the median of all pairwise log ratios new_i / base_j) and its
distribution-free confidence interval obtained by inverting the Mann-Whitney U test (Moses'
interval). Compared with a t-test it needs no normality and shrugs off outliers; compared with a
bootstrap of the ratio of medians it is deterministic (the same inputs always give the same
verdict, which a CI gate must) and keeps its coverage with as few as 7 samples per side, where the
percentile bootstrap of a median is known to be too narrow.

Verdict, with t the minimum effect (`--threshold`, default 5 %) and an 80 % two-sided interval
(so each bound is a one-sided 90 % bound):
  slower     the interval's lower bound is above 1 + t: 90 % confident the loss is at least t
  faster     the upper bound is below 1 / (1 + t)
  same       the whole interval lies within [1 / (1 + t), 1 + t]: any change is below t
  uncertain  anything else: too noisy to tell at this sample count (not a regression; listed)
Requiring the *bound*, not the point estimate, to clear the threshold is what keeps the false
alarm rate low for every true change up to t (about 10 % for a change of exactly t, about 1 in
2000 for a 2 % change, none seen for an A/A pair), at the price of needing a loss somewhat above t
to be sure of it: with 5 % lognormal noise and 30 samples a side, a 10 % loss is caught about 98 %
of the time. A 95 % bound would cut the at-threshold rate to 5 % but catch a 10 % loss only about
96 % of the time, too close to the 95 % the gate promises. scripts/compare_study.py measures these
rates.

Between processes. The samples of one process share its state (memory layout, thread placement,
clock): on a shared VM a kernel's median moves by more than 5 % from one process to the next
while each process's own interval stays tight, so an interval built on pooled samples alone
calls unchanged code slower. Runs therefore measure every kernel in several processes
(`--processes`, measure/workers.py), and when both sides have at least two, the processes are the
units: the interval is the hull of the Moses interval on the pooled samples and a Welch t
interval on the per-process log medians (mean difference, Welch-Satterthwaite degrees of
freedom), so between-process spread widens it instead of producing a confident false verdict.
With one process on either side only the within-process interval exists, and the row says so.
The threshold still absorbs what no interval covers (a machine that drifts between two runs'
time windows), which is why a change inside it is never a regression however significant.

A numerical check that passed in BASE and failed (or could not run) in NEW is always a regression,
whatever the times say: a wrong-but-fast kernel must never look like a win.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pwbench import samples
from pwbench.errors import UserError
from pwbench.store import results

CONFIDENCE = 0.80  # two-sided; each bound is a one-sided 90 % bound
Z_ONE_SIDED = 1.2815515655446004  # standard normal quantile at 0.90
REGRESSIONS = ("slower", "failed")
# What a regression gate must look at when the environments differ (the commit is expected to)
ENV_KEYS = ("cpu_model", "cpu_id", "cpu_flags", "cores", "machine", "gpu", "gpu_driver", "threads",
            "thread_env", "target", "cache", "python", "hostname")


@dataclass
class Shift:
    """new / base time ratio: the Hodges-Lehmann estimate and the interval built around it."""
    ratio: float
    low: float
    high: float
    p_value: float  # two-sided Mann-Whitney U, H0: no shift (or Welch's t across processes)
    units: str = "samples"  # what the interval treats as independent: samples or processes


def shift(base, new) -> Shift:
    """Hodges-Lehmann ratio (median pairwise ratio) and its Moses (Mann-Whitney inverted) interval.

    The point estimate is the one the interval is built around, so it always lies inside it (a
    ratio of medians can fall outside on skewed samples)."""
    b, n = np.log(np.asarray(base, float)), np.log(np.asarray(new, float))
    m, k = len(b), len(n)
    diffs = (n[:, None] - b[None, :]).ravel()
    # number of pairwise differences cut off each tail (normal approximation of U's distribution)
    sd_u = math.sqrt(m * k * (m + k + 1) / 12)
    cut = max(0, math.floor(m * k / 2 - Z_ONE_SIDED * sd_u - 0.5))
    lo, hi = np.partition(diffs, [cut, diffs.size - 1 - cut])[[cut, diffs.size - 1 - cut]]
    u = float((diffs > 0).sum() + 0.5 * (diffs == 0).sum())  # U statistic of NEW over BASE
    z = (abs(u - m * k / 2) - 0.5) / sd_u if sd_u else 0.0
    ratio = float(np.exp(np.median(diffs)))
    return Shift(ratio, float(np.exp(lo)), float(np.exp(hi)), math.erfc(max(z, 0.0) / math.sqrt(2)))


@dataclass(frozen=True)
class Spread:
    """Variance of log per-process medians and its degrees of freedom."""
    var: float
    df: int


def spread(medians: np.ndarray) -> Spread | None:
    logs = np.log(medians)
    return Spread(float(logs.var(ddof=1)), logs.size - 1) if logs.size >= 2 else None


def pooled_spread(spreads) -> Spread | None:
    """The between-process variance of a whole run: every kernel's, weighted by its degrees of
    freedom. A run's processes share the machine states that cause the spread, so this estimate
    (tens of degrees of freedom) guards each kernel's own (two, with three processes), which is
    sometimes small by chance, against a confident false verdict."""
    spreads = [s for s in spreads if s is not None]
    df = sum(s.df for s in spreads)
    return Spread(sum(s.var * s.df for s in spreads) / df, df) if df else None


def process_shift(base: Side, new: Side) -> Shift | None:
    """Welch's t interval (at CONFIDENCE) of the mean log ratio of per-process medians, each
    side's variance the larger of the kernel's own and its run's pooled one; None when a side has
    fewer than two processes or no spread at all to estimate from."""
    from scipy import stats

    b, n = np.log(base.process_medians), np.log(new.process_medians)
    if min(b.size, n.size) < 2:
        return None
    (vb, db), (vn, dn) = _variance(base), _variance(new)
    vb, vn = vb / b.size, vn / n.size
    se = math.sqrt(vb + vn)
    if se == 0:
        return None
    df = (vb + vn) ** 2 / (vb ** 2 / db + vn ** 2 / dn)
    diff, half = n.mean() - b.mean(), stats.t.ppf(0.5 + CONFIDENCE / 2, df) * se
    p_value = 2 * stats.t.sf(abs(diff) / se, df)
    return Shift(math.exp(diff), math.exp(diff - half), math.exp(diff + half), float(p_value),
                 "processes")


def _variance(side: Side) -> tuple[float, int]:
    own = spread(side.process_medians)
    run = side.run_spread
    return (run.var, run.df) if run is not None and run.var > own.var else (own.var, own.df)


def combined_shift(base: Side, new: Side) -> Shift:
    """The within-process interval, widened to the between-process one when both exist."""
    within = shift(base.samples, new.samples)
    between = process_shift(base, new)
    if between is None:
        return within
    return Shift(within.ratio, min(within.low, between.low), max(within.high, between.high),
                 max(within.p_value, between.p_value), "processes")


def timing_verdict(s: Shift, threshold: float) -> str:
    up, down = 1 + threshold, 1 / (1 + threshold)
    if s.low > up:
        return "slower"
    if s.high < down:
        return "faster"
    if down <= s.low and s.high <= up:
        return "same"
    return "uncertain"


# ---- pairing rows of two runs -------------------------------------------------------------------

@dataclass
class Side:
    """One kernel in one run (or in several recorded runs); a shape recurring under several layer
    names is one kernel, measured once and copied into each layer's row."""
    layers: list[str]
    samples: np.ndarray
    process_medians: np.ndarray  # one per measuring process (of every run pooled)
    median_s: float
    check: str
    error: str
    run_spread: Spread | None = None  # pooled over every kernel of its run(s)


def sides(records: pd.DataFrame) -> dict[tuple, Side]:
    """Rows grouped by kernel (results.KERNEL_KEY). Distinct measurements of one kernel (several
    runs from the history, or older runs that measured a shape once per layer) are pooled, each
    process of each keeping its own identity; copies of one measurement count once."""
    out = {}
    for key, group in records.groupby(list(results.KERNEL_KEY), sort=False, dropna=False):
        unique, medians = {}, []
        for row in group.itertuples(index=False):
            values = tuple(row.samples_s) if row.samples_s is not None else ()
            if values and values not in unique:
                procs = getattr(row, "samples_process", None)
                procs = np.asarray(procs) if procs is not None and len(procs) == len(values) \
                    else np.zeros(len(values), int)
                unique[values] = procs
                medians += list(samples.process_medians(values, procs))
        pooled = np.concatenate([np.asarray(v, float) for v in unique]) if unique else np.array([])
        checks = [str(c) for c in group["check"].fillna("")]
        out[key] = Side(list(dict.fromkeys(map(str, group["layer"]))), pooled, np.asarray(medians),
                        float(np.median(pooled)) if pooled.size else math.nan,
                        _worst_check(checks), next((str(e) for e in group["error"] if e), ""))
    run = pooled_spread(spread(side.process_medians) for side in out.values())
    for side in out.values():
        side.run_spread = run
    return out


def _worst_check(checks: list[str]) -> str:
    for verdict in ("failed", "", "untrusted"):
        if verdict in checks:
            return verdict
    return "passed"


# ---- the comparison -----------------------------------------------------------------------------

@dataclass
class Row:
    layer: str
    spec_id: str
    backend: str
    target: str
    verdict: str
    base_median_s: float = math.nan
    new_median_s: float = math.nan
    ratio: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan
    base_n: int = 0
    new_n: int = 0
    base_check: str = ""
    new_check: str = ""
    note: str = ""
    variant: str = ""
    cache: str = "hot"
    clock: str = "host"

    @property
    def regression(self) -> bool:
        return self.verdict in REGRESSIONS


@dataclass
class Comparison:
    base: str
    new: str
    threshold: float
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.regression]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rows:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
        return counts


def _ran(check: str) -> bool:
    return check in ("passed", "untrusted")


def compare_sides(key: tuple, base: Side | None, new: Side | None, threshold: float) -> Row:
    spec_id, backend, target, variant, cache, clock = key
    layer = ", ".join((new or base).layers[:3]) + (" ..." if len((new or base).layers) > 3 else "")
    row = Row(layer, spec_id, backend, target, "", variant=variant, cache=cache, clock=clock)
    if base is None or new is None:
        row.verdict = "new" if base is None else "missing"
        row.note = "only in NEW" if base is None else "only in BASE: not measured by NEW"
        return row
    row.base_check, row.new_check = base.check, new.check
    row.base_median_s, row.new_median_s = base.median_s, new.median_s
    row.base_n, row.new_n = base.samples.size, new.samples.size
    if _ran(base.check) and not _ran(new.check):
        row.verdict = "failed"
        row.note = f"check {base.check} -> {new.check or 'not run'}" + (f": {new.error}" if new.error else "")
    elif not _ran(base.check):
        row.verdict = "fixed" if _ran(new.check) else "not timed"
        row.note = f"check {base.check or 'not run'} -> {new.check or 'not run'}"
    elif min(base.samples.size, new.samples.size) < 2:
        row.verdict, row.note = "uncertain", "fewer than 2 samples"
    else:
        s = combined_shift(base, new)
        row.ratio, row.ci_low, row.ci_high, row.p_value = s.ratio, s.low, s.high, s.p_value
        row.verdict = timing_verdict(s, threshold)
        if s.units == "samples":
            row.note = "one process per side: between-process spread not in the interval"
    return row


def compare_records(base: pd.DataFrame, new: pd.DataFrame, threshold: float,
                    base_name: str = "BASE", new_name: str = "NEW") -> Comparison:
    b, n = sides(base), sides(new)
    if not set(b) & set(n):
        if {k[:3] for k in b} & {k[:3] for k in n}:
            raise UserError(
                f"{base_name} and {new_name} have no kernel in common: the same shapes and "
                f"backends, but other variants ({base_name}: {_variants(b)}; {new_name}: "
                f"{_variants(n)}), which are other kernels (a blocked layout is never paired "
                "with NCHW in and out)")
        raise UserError(f"{base_name} and {new_name} have no kernel (spec id, backend, target) in "
                        "common: not runs of the same suite and backends")
    rows = [compare_sides(k, b.get(k), n.get(k), threshold) for k in dict.fromkeys([*b, *n])]
    _name_other_variants(rows, b, n)
    return Comparison(base_name, new_name, threshold, rows)


def _variants(sides_: dict) -> str:
    return ", ".join(sorted({k[3] or "(none)" for k in sides_}))


def _name_other_variants(rows: list[Row], base: dict, new: dict) -> None:
    """A kernel only in one run, whose shape and backend the other run measured as another
    variant (a blocked layout vs NCHW in and out, another design space): never paired, since
    they are different kernels, but said, so that nobody reads it as a kernel gone or added."""
    for row in rows:
        if row.verdict not in ("new", "missing"):
            continue
        other = base if row.verdict == "new" else new
        variants = sorted({k[3] or "(none)" for k in other if k[:3] == (row.spec_id, row.backend,
                                                                      row.target)})
        if variants:
            side = "BASE" if row.verdict == "new" else "NEW"
            row.note += (f"; not paired with {side}'s variant {', '.join(variants)} of this "
                         f"shape and backend: variant {row.variant or '(none)'} is another kernel")


def env_differences(base: dict, new: dict) -> list[str]:
    """What differs between two runs' environments, in words ('threads 1 -> 2')."""
    diffs = [f"{k} {_short(base.get(k))} -> {_short(new.get(k))}"  # keys older runs lack: skipped
             for k in ENV_KEYS if k in base and k in new and base[k] != new[k]]
    bv, nv = base.get("versions") or {}, new.get("versions") or {}
    diffs += [f"{lib} {bv.get(lib, 'absent')} -> {nv.get(lib, 'absent')}"
              for lib in dict.fromkeys([*bv, *nv]) if bv.get(lib) != nv.get(lib)]
    return diffs


def _short(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def busy_notes(meta: dict, name: str) -> list[str]:
    load, cores = meta.get("load_average"), meta.get("cores")
    if load and cores and load > 0.5 * cores:
        return [f"{name} was measured on a busy machine (load average {load:.1f} on {cores} cores)"]
    return []


# ---- loading and output -------------------------------------------------------------------------

def parse_threshold(text: str) -> float:
    """A percentage, with or without the sign: '5%' and '5' -> 0.05."""
    try:
        value = float(text.strip().removesuffix("%")) / 100
    except ValueError:
        value = math.nan
    if not 0 <= value < 10:  # also false for NaN
        raise UserError(f"--threshold expects a percentage such as 5%, got {text!r}")
    return value


def load_run(directory: Path) -> results.Run:
    run = results.load_run(directory)
    if "samples_s" not in run.records.columns:
        raise UserError(f"{directory}: records have no raw samples (samples_s); cannot compare")
    return run


def compare_runs(base_dir: Path, new_dir: Path, threshold: float) -> Comparison:
    base, new = load_run(base_dir), load_run(new_dir)
    result = compare_records(base.records, new.records, threshold, str(base_dir), str(new_dir))
    diffs = env_differences(base.meta, new.meta)
    if diffs:
        result.warnings.append("environments differ, timings may not be comparable: " + "; ".join(diffs))
    result.warnings += busy_notes(base.meta, "BASE") + busy_notes(new.meta, "NEW")
    result.warnings += base.warnings + new.warnings
    return result


def changed(result: Comparison) -> list[Row]:
    return [r for r in result.rows if r.verdict != "same"]


def _pct(ratio: float) -> str:
    return "-" if math.isnan(ratio) else f"{(ratio - 1) * 100:+.1f} %"


def _ci(r: Row) -> str:
    return "-" if math.isnan(r.ci_low) else f"{_pct(r.ci_low)} .. {_pct(r.ci_high)}"


def summary_line(result: Comparison) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in sorted(result.counts().items()))
    head = (f"{len(result.regressions)} regression(s)" if result.regressions else "no regression")
    return (f"{head}: {len(result.rows)} kernels, {counts} (threshold {result.threshold:.0%}, "
            f"{CONFIDENCE:.0%} interval)")


COLUMNS = ("verdict", "layer", "backend", "base", "new", "change", "80 % interval", "note")


def cells(r: Row) -> list[str]:
    from pwbench.units import format_seconds

    return [r.verdict, r.layer, r.backend, format_seconds(r.base_median_s),
            format_seconds(r.new_median_s), _pct(r.ratio), _ci(r), r.note]


def to_markdown(result: Comparison) -> str:
    lines = [f"**pwbench compare** `{result.base}` -> `{result.new}`: {summary_line(result)}", ""]
    lines += [f"> warning: {w}" for w in result.warnings]
    rows = changed(result)
    if rows:
        lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_json(result: Comparison) -> str:
    data = {"base": result.base, "new": result.new, "threshold": result.threshold,
            "confidence": CONFIDENCE, "regressions": len(result.regressions),
            "counts": result.counts(), "warnings": result.warnings,
            "rows": [asdict(r) | {"regression": r.regression} for r in result.rows]}
    return json.dumps(_no_nan(data), indent=2)


def _no_nan(value):
    """NaN (a kernel not timed) as JSON null, which every JSON reader accepts."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value
