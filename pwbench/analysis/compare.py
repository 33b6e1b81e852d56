"""`pwbench compare BASE... NEW`: a regression verdict per kernel, and an exit status CI can gate on.

Rows of the two sides pair by kernel (results.KERNEL_KEY); the statistics and the verdicts are
analysis/stats.py's. BASE may be several runs of the same code (or a folder of them), or the
recorded runs of NEW's fingerprint (`--against-history`): each run is an invocation, and the
spread between them enters every kernel's interval.

A gate must not pass because data is missing. A kernel that BASE measured and NEW did not
(`missing`: a run cut short, a filter changed) makes the comparison fail unless the caller
accepts it (`--accept-missing`); a run killed or interrupted, or a records.jsonl line cut short,
is named in a warning; comparing a run with itself is refused.

A numerical check that passed in BASE and failed (or could not run) in NEW is always a regression,
whatever the times say: a wrong-but-fast kernel must never look like a win. Rows of the
instruction clock pair only with rows of the same clock, so a count never meets a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pwbench.analysis import stats
from pwbench.analysis.sides import Side, sides
from pwbench.errors import UserError
from pwbench.store import history, results

REGRESSIONS = ("slower", "failed")
# What a regression gate must look at when the environments differ (the commit is expected to)
ENV_KEYS = ("cpu_model", "cpu_id", "cpu_flags", "cores", "machine", "gpu", "gpu_driver", "threads",
            "thread_env", "target", "cache", "python", "hostname", "clock", "isa_cap",
            "instruction_clock")


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
    units: str = ""  # what the interval treated as independent: samples, processes, invocations

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
    count_threshold: float = stats.COUNT_THRESHOLD
    base_runs: int = 1  # invocations in the baseline

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.regression]

    @property
    def missing(self) -> list[Row]:
        """Kernels BASE measured that NEW did not: a gate cannot pass on them."""
        return [r for r in self.rows if r.verdict == "missing"]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rows:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
        return counts


def _ran(check: str) -> bool:
    return check in ("passed", "untrusted")


def compare_sides(key: tuple, base: Side | None, new: Side | None, threshold: float,
                  count_threshold: float = stats.COUNT_THRESHOLD) -> Row:
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
    if _ran(base.check) and not _ran(new.check):
        row.verdict = "failed"
        row.note = f"check {base.check} -> {new.check or 'not run'}" + (f": {new.error}" if new.error else "")
    elif not _ran(base.check):
        row.verdict = "fixed" if _ran(new.check) else "not timed"
        row.note = f"check {base.check or 'not run'} -> {new.check or 'not run'}"
    elif base.count_medians.size and new.count_medians.size:
        _counted(row, base, new, count_threshold)
    elif min(base.samples.size, new.samples.size) < 2:
        row.verdict, row.note = "uncertain", "fewer than 2 samples"
    else:
        _timed(row, base, new, threshold)
    return row


def _timed(row: Row, base: Side, new: Side, threshold: float) -> None:
    s = stats.hull(stats.shift(base.samples, new.samples),
                   stats.process_shift(base.process_logs, new.process_logs, base.run_spread,
                                       new.run_spread),
                   stats.invocation_shift(base.invocation_logs, new.invocation_logs,
                                          base.invocation_spread))
    row.ratio, row.ci_low, row.ci_high, row.p_value = s.ratio, s.low, s.high, s.p_value
    row.verdict, row.units = stats.timing_verdict(s, threshold), s.units
    if s.units == "samples":
        row.note = "one process per side: between-process spread not in the interval"


def _counted(row: Row, base: Side, new: Side, threshold: float) -> None:
    """Instruction counts: a plain threshold on the ratio of median counts; a note when a side's
    counts vary between its processes by more than half the threshold (the floor the threshold
    was chosen above does not hold for this kernel)."""
    row.base_n, row.new_n = base.count_medians.size, new.count_medians.size  # processes
    row.ratio = new.instructions / base.instructions
    row.verdict = stats.count_verdict(row.ratio, threshold)
    worst = max((s.count_medians.max() / s.count_medians.min() - 1) for s in (base, new))
    if worst > threshold / 2:
        row.note = (f"counts vary by {worst:.1%} between processes of one run: above the noise "
                    "floor this threshold assumes")


def compare_records(base: pd.DataFrame, new: pd.DataFrame, threshold: float,
                    base_name: str = "BASE", new_name: str = "NEW",
                    count_threshold: float = stats.COUNT_THRESHOLD) -> Comparison:
    """Rows of BASE (one run, or several told apart by results.INVOCATION) against NEW's."""
    b, n = sides(base), sides(new)
    if not set(b) & set(n):
        raise _nothing_in_common(b, n, base_name, new_name)
    rows = [compare_sides(k, b.get(k), n.get(k), threshold, count_threshold)
            for k in dict.fromkeys([*b, *n])]
    _name_other_variants(rows, b, n)
    runs = base[results.INVOCATION].nunique() if results.INVOCATION in base else 1
    return Comparison(base_name, new_name, threshold, rows, count_threshold=count_threshold,
                      base_runs=int(runs))


def _nothing_in_common(b: dict, n: dict, base_name: str, new_name: str) -> UserError:
    clocks = [sorted({str(k[-1]) for k in side}) for side in (b, n)]
    if clocks[0] == clocks[1] and {k[:3] for k in b} & {k[:3] for k in n}:
        return UserError(
            f"{base_name} and {new_name} have no kernel in common: the same shapes and "
            f"backends, but other variants ({base_name}: {_variants(b)}; {new_name}: "
            f"{_variants(n)}), which are other kernels (a blocked layout is never paired "
            "with NCHW in and out)")
    why = (f" (BASE measured with clock {', '.join(clocks[0])}, NEW with "
           f"{', '.join(clocks[1])}: a count never pairs with a time)" if clocks[0] != clocks[1]
           else "")
    return UserError(f"{base_name} and {new_name} have no kernel (spec id, backend, target) in "
                     f"common: not runs of the same suite and backends{why}")


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
    if isinstance(bv, dict) and isinstance(nv, dict):
        diffs += [f"{lib} {bv.get(lib, 'absent')} -> {nv.get(lib, 'absent')}"
                  for lib in dict.fromkeys([*bv, *nv]) if bv.get(lib) != nv.get(lib)]
    return diffs


def _short(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def busy_notes(meta: dict, name: str) -> list[str]:
    load, cores = meta.get("load_average"), meta.get("cores")
    if isinstance(load, (int, float)) and isinstance(cores, int) and load > 0.5 * cores:
        return [f"{name} was measured on a busy machine (load average {load:.1f} on {cores} cores)"]
    return []


def parse_threshold(text: str, option: str = "--threshold") -> float:
    """A percentage, with or without the sign: '5%' and '5' -> 0.05."""
    try:
        value = float(text.strip().removesuffix("%")) / 100
    except ValueError:
        value = math.nan
    if not 0 <= value < 10:  # also false for NaN
        raise UserError(f"{option} expects a percentage such as 5%, got {text!r}")
    return value


# ---- loading ------------------------------------------------------------------------------------

def load_run(directory: Path) -> results.Run:
    run = results.load_run(directory)
    if "samples_s" not in run.records.columns:
        raise UserError(f"{directory}: records have no raw samples (samples_s); cannot compare")
    return run


def baseline_dirs(given: list[Path]) -> list[Path]:
    """Run directories of a baseline: each given run, or the runs inside a folder of them."""
    dirs = []
    for path in map(Path, given):
        inner = sorted(p.parent for p in path.glob("*/" + results.META)) \
            if path.is_dir() and not (path / results.META).exists() else []
        dirs += inner or [path]
    return dirs


def compare_runs(base_dirs, new_dir: Path, threshold: float,
                 count_threshold: float = stats.COUNT_THRESHOLD) -> Comparison:
    """NEW against a baseline of one or several runs (each an invocation)."""
    base_dirs = baseline_dirs(base_dirs if isinstance(base_dirs, (list, tuple)) else [base_dirs])
    bases, new = [load_run(d) for d in base_dirs], load_run(new_dir)
    _refuse_self_comparison(bases, new)
    records = pd.concat([b.records.assign(**{results.INVOCATION: i}) for i, b in enumerate(bases)],
                        ignore_index=True)
    name = str(base_dirs[0]) if len(bases) == 1 else f"{len(bases)} runs ({base_dirs[0]}, ...)"
    result = compare_records(records, new.records, threshold, name, str(new_dir), count_threshold)
    diffs = env_differences(bases[0].meta, new.meta)
    if diffs:
        result.warnings.append("environments differ, timings may not be comparable: " + "; ".join(diffs))
    for other in bases[1:]:
        if other.meta.get("fingerprint") != bases[0].meta.get("fingerprint"):
            result.warnings.append(f"the baseline's runs differ in environment: {other.dir} "
                                   f"has another fingerprint than {bases[0].dir}")
    result.warnings += [w for b in bases for w in busy_notes(b.meta, f"BASE {b.dir}")]
    result.warnings += busy_notes(new.meta, "NEW")
    result.warnings += [w for b in bases for w in b.warnings] + new.warnings
    return result


def _refuse_self_comparison(bases: list[results.Run], new: results.Run) -> None:
    """A run compared with itself always passes: a gate given the same path twice (a CI variable
    unset, a copy of the baseline) would say nothing while looking green."""
    uid = history.run_uid(new.meta, new.records)
    for base in bases:
        same = base.dir.resolve() == new.dir.resolve()
        if same or history.run_uid(base.meta, base.records) == uid:
            how = "the same run directory" if same else "the same run (identical records)"
            raise UserError(f"BASE {base.dir} and NEW {new.dir} are {how}: comparing a run with "
                            "itself says nothing; give a baseline and a new run")
    dirs = [b.dir.resolve() for b in bases]
    if len(set(dirs)) < len(dirs):
        raise UserError("a baseline run is given twice: each run counts as one invocation")


def compare_with_history(conn, new_dir: Path, threshold: float, last: int, db_name: str,
                         count_threshold: float = stats.COUNT_THRESHOLD) -> Comparison:
    """NEW against the `last` recorded runs of its fingerprint, each an invocation."""
    new = load_run(Path(new_dir))
    fingerprint = new.meta.get("fingerprint")
    if not fingerprint:
        raise UserError(f"{new_dir}: meta.json has no fingerprint; cannot find comparable history")
    ids, meta, records = history.baseline(conn, fingerprint, history.run_uid(new.meta, new.records),
                                          last)
    name = f"history ({len(ids)} run(s) of {fingerprint} in {db_name})"
    result = compare_records(records, new.records, threshold, name, str(new_dir), count_threshold)
    diffs = env_differences(meta, new.meta)
    if diffs:  # same fingerprint, so only the hostname or Python can differ
        result.warnings.append("environments differ: " + "; ".join(diffs))
    result.warnings += busy_notes(new.meta, "NEW") + new.warnings
    return result
