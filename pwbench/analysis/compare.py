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

Instruction counts (`pwbench run --clock instructions`). A count does not drift with the machine:
the same code gives the same count to within glibc malloc's path length inside a torch op
(measured across separate invocations: see measure/instructions.py, NOISE_FLOOR), and exactly
the same count for a TVM kernel. No interval is needed, so a counted kernel's verdict is a plain
threshold on the ratio of its median counts per call, new / base (the median over processes of
each process's median): slower above 1 + t, faster below 1 / (1 + t), else same, with t the
count threshold (`--count-threshold`, default COUNT_THRESHOLD = 2 %, above the noise floor,
so an A/A pair is never flagged and a 10 % change in work, which moves a count by 8-10 %, always
is). Rows pair only with rows of the same clock (results.KERNEL_KEY), so a count never meets a
time.
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
COUNT_THRESHOLD = 0.02  # instruction counts: above the noise floor measured across invocations
Z_ONE_SIDED = 1.2815515655446004  # standard normal quantile at 0.90
REGRESSIONS = ("slower", "failed")
# What a regression gate must look at when the environments differ (the commit is expected to)
ENV_KEYS = ("cpu_model", "cpu_id", "cpu_flags", "cores", "machine", "gpu", "gpu_driver", "threads",
            "thread_env", "target", "cache", "python", "hostname", "clock", "isa_cap",
            "instruction_clock")


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
    count_medians: np.ndarray = field(default_factory=lambda: np.array([]))  # instruction clock:
    # the median instructions per call of each process

    @property
    def instructions(self) -> float:
        return float(np.median(self.count_medians)) if self.count_medians.size else math.nan


def sides(records: pd.DataFrame) -> dict[tuple, Side]:
    """Rows grouped by kernel (results.KERNEL_KEY). Distinct measurements of one kernel (several
    runs from the history, or older runs that measured a shape once per layer) are pooled, each
    process of each keeping its own identity; copies of one measurement count once."""
    out = {}
    for key, group in records.groupby(list(results.KERNEL_KEY), sort=False, dropna=False):
        unique, medians, counts = {}, [], {}
        for row in group.itertuples(index=False):
            procs = getattr(row, "samples_process", None)
            values = tuple(row.samples_s) if row.samples_s is not None else ()
            if values and values not in unique:
                unique[values] = _processes(procs, len(values))
                medians += list(samples.process_medians(values, unique[values]))
            instructions = getattr(row, "samples_instructions", None)
            instructions = tuple(instructions) if _listlike(instructions) else ()
            if instructions and instructions not in counts:  # copies of one measurement count once
                counts[instructions] = samples.process_medians(
                    instructions, _processes(procs, len(instructions)))
        pooled = np.concatenate([np.asarray(v, float) for v in unique]) if unique else np.array([])
        checks = [str(c) for c in group["check"].fillna("")]
        out[key] = Side(list(dict.fromkeys(map(str, group["layer"]))), pooled, np.asarray(medians),
                        float(np.median(pooled)) if pooled.size else math.nan,
                        _worst_check(checks), next((str(e) for e in group["error"] if e), ""),
                        count_medians=np.concatenate([*counts.values()]) if counts else np.array([]))
    run = pooled_spread(spread(side.process_medians) for side in out.values())
    for side in out.values():
        side.run_spread = run
    return out


def _processes(procs, n: int) -> np.ndarray:
    return np.asarray(procs) if _listlike(procs) and len(procs) == n else np.zeros(n, int)


def _listlike(value) -> bool:
    return value is not None and not isinstance(value, (float, str)) and hasattr(value, "__len__")


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
    base_instructions: float = math.nan  # instruction clock: median instructions per call
    new_instructions: float = math.nan

    @property
    def regression(self) -> bool:
        return self.verdict in REGRESSIONS

    @property
    def counted(self) -> bool:
        return not (math.isnan(self.base_instructions) and math.isnan(self.new_instructions))


@dataclass
class Comparison:
    base: str
    new: str
    threshold: float
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)
    count_threshold: float = COUNT_THRESHOLD

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


def count_verdict(ratio: float, threshold: float) -> str:
    """Instruction counts: a plain threshold on new / base (no interval: see the docstring)."""
    if ratio > 1 + threshold:
        return "slower"
    if ratio < 1 / (1 + threshold):
        return "faster"
    return "same"


def compare_sides(key: tuple, base: Side | None, new: Side | None, threshold: float,
                  count_threshold: float = COUNT_THRESHOLD) -> Row:
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
    row.base_instructions, row.new_instructions = base.instructions, new.instructions
    counted = base.count_medians.size and new.count_medians.size
    if counted:
        row.base_n, row.new_n = base.count_medians.size, new.count_medians.size  # processes
    if _ran(base.check) and not _ran(new.check):
        row.verdict = "failed"
        row.note = f"check {base.check} -> {new.check or 'not run'}" + (f": {new.error}" if new.error else "")
    elif not _ran(base.check):
        row.verdict = "fixed" if _ran(new.check) else "not timed"
        row.note = f"check {base.check or 'not run'} -> {new.check or 'not run'}"
    elif counted:
        row.ratio = new.instructions / base.instructions
        row.verdict = count_verdict(row.ratio, count_threshold)
        row.note = _count_note(base, new, count_threshold)
    elif min(base.samples.size, new.samples.size) < 2:
        row.verdict, row.note = "uncertain", "fewer than 2 samples"
    else:
        s = combined_shift(base, new)
        row.ratio, row.ci_low, row.ci_high, row.p_value = s.ratio, s.low, s.high, s.p_value
        row.verdict = timing_verdict(s, threshold)
        if s.units == "samples":
            row.note = "one process per side: between-process spread not in the interval"
    return row


def _count_note(base: Side, new: Side, threshold: float) -> str:
    """Say so when a side's counts vary between its processes by more than half the threshold:
    then the floor the threshold was chosen above does not hold for this kernel."""
    worst = max((s.count_medians.max() / s.count_medians.min() - 1) for s in (base, new))
    if worst > threshold / 2:
        return (f"counts vary by {worst:.1%} between processes of one run: above the noise "
                "floor this threshold assumes")
    return ""


def compare_records(base: pd.DataFrame, new: pd.DataFrame, threshold: float,
                    base_name: str = "BASE", new_name: str = "NEW",
                    count_threshold: float = COUNT_THRESHOLD) -> Comparison:
    b, n = sides(base), sides(new)
    if not set(b) & set(n):
        clocks = [sorted({str(k[-1]) for k in side}) for side in (b, n)]
        if clocks[0] == clocks[1] and {k[:3] for k in b} & {k[:3] for k in n}:
            raise UserError(
                f"{base_name} and {new_name} have no kernel in common: the same shapes and "
                f"backends, but other variants ({base_name}: {_variants(b)}; {new_name}: "
                f"{_variants(n)}), which are other kernels (a blocked layout is never paired "
                "with NCHW in and out)")
        why = (f" (BASE measured with clock {', '.join(clocks[0])}, NEW with "
               f"{', '.join(clocks[1])}: a count never pairs with a time)" if clocks[0] != clocks[1]
               else "")
        raise UserError(f"{base_name} and {new_name} have no kernel (spec id, backend, target) in "
                        f"common: not runs of the same suite and backends{why}")
    rows = [compare_sides(k, b.get(k), n.get(k), threshold, count_threshold)
            for k in dict.fromkeys([*b, *n])]
    _name_other_variants(rows, b, n)
    return Comparison(base_name, new_name, threshold, rows, count_threshold=count_threshold)


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
    diffs = []
    for k in ENV_KEYS:  # keys older runs lack: skipped
        if k not in base or k not in new or base[k] == new[k]:
            continue
        if isinstance(base[k], dict) and isinstance(new[k], dict):  # only what differs in it
            diffs += [f"{k}.{sub} {_short(base[k].get(sub))} -> {_short(new[k].get(sub))}"
                      for sub in dict.fromkeys([*base[k], *new[k]])
                      if base[k].get(sub) != new[k].get(sub)]
        else:
            diffs.append(f"{k} {_short(base.get(k))} -> {_short(new.get(k))}")
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

def parse_threshold(text: str, option: str = "--threshold") -> float:
    """A percentage, with or without the sign: '5%' and '5' -> 0.05."""
    try:
        value = float(text.strip().removesuffix("%")) / 100
    except ValueError:
        value = math.nan
    if not 0 <= value < 10:  # also false for NaN
        raise UserError(f"{option} expects a percentage such as 5%, got {text!r}")
    return value


def load_run(directory: Path) -> results.Run:
    run = results.load_run(directory)
    if "samples_s" not in run.records.columns:
        raise UserError(f"{directory}: records have no raw samples (samples_s); cannot compare")
    return run


def compare_runs(base_dir: Path, new_dir: Path, threshold: float,
                 count_threshold: float = COUNT_THRESHOLD) -> Comparison:
    base, new = load_run(base_dir), load_run(new_dir)
    result = compare_records(base.records, new.records, threshold, str(base_dir), str(new_dir),
                             count_threshold)
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
    timed = any(not r.counted for r in result.rows)
    rules = [f"threshold {result.threshold:.0%}, {CONFIDENCE:.0%} interval"] if timed else []
    if any(r.counted for r in result.rows):
        rules.append(f"instruction counts: threshold {result.count_threshold:.1%} on the ratio")
    return f"{head}: {len(result.rows)} kernels, {counts} ({'; '.join(rules)})"


COLUMNS = ("verdict", "layer", "backend", "base", "new", "change", "80 % interval", "note")


def cells(r: Row) -> list[str]:
    from pwbench.units import format_seconds

    if r.counted:  # instructions per call; no interval (a plain threshold)
        return [r.verdict, r.layer, r.backend, _instructions(r.base_instructions),
                _instructions(r.new_instructions), _pct(r.ratio), "-", r.note]
    return [r.verdict, r.layer, r.backend, format_seconds(r.base_median_s),
            format_seconds(r.new_median_s), _pct(r.ratio), _ci(r), r.note]


def _instructions(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f} instr"


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
            "count_threshold": result.count_threshold,
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
