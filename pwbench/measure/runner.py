"""The pipeline: suite -> specs -> backend.prepare -> verify -> time -> record row."""

from __future__ import annotations

import math
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from pwbench import backends, env, targets
from pwbench.targets import peaks
from pwbench.measure import timing, verify
from pwbench.analysis import roofline
from pwbench.store import results
from pwbench.workloads import suites
from pwbench.errors import UserError
from pwbench.workloads.spec import ConvSpec


@dataclass
class RunConfig:
    suite: str = suites.DEFAULT_SUITE
    target: str = "cpu"
    backends: tuple[str, ...] = ("torch",)
    filter: str | None = None
    batch: int | None = None
    layout: str | None = None
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    output: Path | None = None
    budget: timing.Budget = timing.Budget()
    peaks_file: Path | None = None  # user-given peaks instead of measured ones
    trials: int = 64  # tvm-tuned: MetaSchedule trials per layer
    tune_minutes: float | None = None  # tvm-tuned: tuning budget for the whole suite
    tuning_dir: Path | None = None  # tvm-tuned: tuning database root (default: the cache dir)


def apply_threads(threads: int) -> None:
    """One thread count for every backend. Env vars must be set before the libraries start their
    pools (TVM's default is half the cores, torch's all of them), so this runs before any import."""
    for var in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


@dataclass
class Plan:
    """Everything checked before the first measurement, so bad input fails fast."""
    config: RunConfig
    suite: suites.Suite
    specs: list[ConvSpec]
    target: targets.Target
    modules: dict  # backend name -> module
    peaks: peaks.Peaks | None = None  # roofs for roofline_s / pct_of_roof


def plan(config: RunConfig) -> Plan:
    target = targets.resolve(config.target)
    suite = suites.load(config.suite, batch=config.batch, layout=config.layout)
    specs = suites.select(suite.layers, config.filter)
    if not specs:
        raise UserError(f"--filter {config.filter!r} selects none of the {len(suite.layers)} "
                                 f"layers of suite {suite.name}")
    modules = {name: backends.load(name, target.family) for name in config.backends}
    targets.require_available(target)
    for module in modules.values():  # e.g. open a tuning database: a bad one fails here, once
        if hasattr(module, "configure"):
            module.configure(config, target)
    given = peaks.load_file(config.peaks_file) if config.peaks_file else None
    return Plan(config, suite, specs, target, modules, given)


def ensure_peaks(p: Plan, on_measure=lambda: None) -> None:
    """Measured once per machine fingerprint and cached; a few seconds the first time."""
    if p.peaks is None:
        p.peaks = peaks.for_run(p.target, p.config.threads, on_measure=on_measure)


def metadata(p: Plan) -> dict:
    meta = env.collect(p.config.threads)
    meta |= {"suite": p.suite.name, "suite_path": str(p.suite.path), "target": p.target.name,
             "backends": list(p.modules), "filter": p.config.filter or "",
             "batch": p.config.batch, "budget": vars(p.config.budget),
             "versions": {k: v for m in p.modules.values() for k, v in m.versions().items()},
             "peaks": p.peaks.to_dict() if p.peaks else None}
    meta["fingerprint"] = env.fingerprint(meta)
    return meta


def measure_one(spec: ConvSpec, backend: str, module, p: Plan, writer=None) -> dict:
    """One row: prepare, check, and time only a kernel that passed (or is untrusted). A tuned
    kernel's tuning curve goes to the writer's tuning_curves.csv."""
    row = {"suite": p.suite.name, **spec.describe(), "backend": backend, "target": p.target.name,
           "threads": p.config.threads, "median_s": math.nan, "iqr_s": math.nan,
           "min_s": math.nan, "n_samples": 0, "number": 0, "samples_s": [], "gflops": math.nan,
           "noisy": False, "check": "", "max_abs_err": math.nan, "max_rel_err": math.nan,
           "error": "", "target_string": "", "tuning": "", "tuning_trials": 0,
           "tuning_s": math.nan, **_roof(spec, math.nan, p)}
    try:
        kernel = module.prepare(spec, p.target)
        row |= getattr(kernel, "columns", {})
        if writer is not None and getattr(kernel, "tuning_record", None):
            from pwbench.tvm_bridge import database

            writer.add_curve(database.curve_rows(spec, backend, p.target.name, kernel.tuning_record))
        result = verify.check(kernel, spec)
        row |= {"check": result.verdict, "max_abs_err": result.max_abs_err,
                "max_rel_err": result.max_rel_err, "error": result.detail}
        if result.verdict == "failed":
            return row
        m = timing.measure(kernel, p.config.budget, sync=kernel.sync)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one broken kernel must not lose the rest of the sweep
        last = traceback.extract_tb(exc.__traceback__)[-1]
        row["error"] = f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})"
        return row
    row |= {"median_s": m.median_s, "iqr_s": m.iqr_s, "min_s": m.min_s,
            "n_samples": len(m.samples_s), "number": m.number, "samples_s": m.samples_s,
            "gflops": results.gflops(spec.flops, m.median_s), "noisy": m.noisy,
            **_roof(spec, m.median_s, p)}
    return row


def _roof(spec: ConvSpec, median_s: float, p: Plan) -> dict:
    return roofline.row_columns(spec.flops, spec.bytes, spec.dtype, median_s, p.peaks)


def execute(p: Plan, on_row=lambda row, done, total: None) -> results.RunWriter:
    """Measure every (layer, backend); rows are on disk as soon as measured."""
    for module in p.modules.values():
        if hasattr(module, "set_threads"):
            module.set_threads(p.config.threads)
    ensure_peaks(p)
    out = p.config.output or results.default_dir(p.suite.name, p.target.name)
    writer = results.RunWriter(out, metadata(p))
    total = len(p.specs) * len(p.modules)
    measured = {}  # a shape that recurs under another name (same spec id) is measured once
    try:
        for spec in p.specs:
            for name, module in p.modules.items():
                key = (spec.id, name)
                if key not in measured:
                    measured[key] = measure_one(spec, name, module, p, writer)
                row = {**measured[key], **spec.describe()}
                writer.add(row)
                on_row(row, len(writer.rows), total)
    except KeyboardInterrupt:
        writer.finish("interrupted")
        raise
    writer.finish()
    return writer
