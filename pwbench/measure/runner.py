"""The pipeline: suite -> specs -> backend.build -> (in worker processes) make, verify, time ->
per-process lines -> pooled rows.

`plan` checks everything that can be wrong before anything is measured (bad input fails in one
line, with nothing written); `execute` builds every kernel in this process (compiling, tuning),
computes each shape's reference outputs once, then measures every kernel in `processes` rounds
of fresh worker processes (measure/workers.py), writing each process's result as it arrives.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pwbench import backends, env, samples, targets
from pwbench.analysis import roofline
from pwbench.backends.base import Built, NoEvents, Options, Unsupported
from pwbench.errors import UserError
from pwbench.measure import timing, verify, workers
from pwbench.store import results
from pwbench.targets import peaks
from pwbench.targets.host import memory_bytes
from pwbench.workloads import suites
from pwbench.workloads.spec import ConvSpec

DEFAULT_PROCESSES = 3  # chosen from A/A runs on a 2-core VM: see README, Measurement
KERNEL_TIMEOUT_S = 600.0  # a worker silent this long on one kernel is killed: an error row


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
    processes: int = DEFAULT_PROCESSES
    cache: str = "hot"
    peaks_file: Path | None = None  # user-given peaks instead of measured ones
    trials: int = 64  # tvm-tuned: MetaSchedule trials per layer
    tune_minutes: float | None = None  # tvm-tuned: tuning budget for the whole suite
    tuning_dir: Path | None = None  # tvm-tuned: tuning database root (default: the cache dir)
    rpc: object = None  # a targets.board.Endpoint: kernels run on boards behind that tracker


class Watcher(Protocol):
    """What the console hears of a run (backends.base.Events for the backends' own lines)."""

    def progress(self, text: str) -> None: ...

    def note(self, text: str) -> None: ...

    def stage(self, text: str, total: int) -> None: ...

    def step(self, text: str, row: dict | None = None) -> None: ...


class Quiet(NoEvents):
    def stage(self, text: str, total: int) -> None:
        pass

    def step(self, text: str, row: dict | None = None) -> None:
        pass


@dataclass
class Plan:
    """Everything checked before the first measurement, so bad input fails fast."""
    config: RunConfig
    suite: suites.Suite
    specs: list[ConvSpec]
    target: targets.Target
    backends: dict  # name -> Backend instance
    output: Path
    peaks: peaks.Peaks | None = None  # roofs for roofline_s / pct_of_roof
    warnings: list[str] = field(default_factory=list)

    @property
    def shapes(self) -> list[ConvSpec]:
        """The distinct shapes: a shape recurring under another name is measured once."""
        return list({s.id: s for s in self.specs}.values())

    @property
    def work_dir(self) -> Path:
        return self.output / ".work"


def plan(config: RunConfig, events=Quiet()) -> Plan:
    if config.processes < 1:
        raise UserError(f"--processes must be at least 1, got {config.processes}")
    if config.cache not in timing.CACHE_STATES:
        raise UserError(f"--cache must be one of {', '.join(timing.CACHE_STATES)}, got {config.cache!r}")
    target = targets.resolve(config.target, config.rpc)
    target.prepare_process(config.threads)  # before torch or TVM start their thread pools
    if config.cache == "cold" and not target.can_evict:
        raise UserError(f"--cache cold: target {target.name} cannot empty its caches between "
                        "samples (a board's kernels are timed there); use --cache hot")
    suite = suites.load(config.suite, batch=config.batch, layout=config.layout)
    specs = suites.select(suite.layers, config.filter)
    if not specs:
        raise UserError(f"--filter {config.filter!r} selects none of the {len(suite.layers)} "
                        f"layers of suite {suite.name}")
    _check_memory(specs)
    classes = {name: backends.backend_class(name, target) for name in config.backends}
    targets.require_runnable(target)
    output = config.output or results.default_dir(suite.name, target.name)
    options = Options(threads=config.threads, work_dir=output / ".work", trials=config.trials,
                      tune_minutes=config.tune_minutes, tuning_dir=config.tuning_dir)
    # e.g. open a tuning database: a bad one fails here, once
    made = {name: cls(target, options, events) for name, cls in classes.items()}
    given = peaks.load_file(config.peaks_file) if config.peaks_file else None
    warnings = []
    cores = target.facts().get("cores") or os.cpu_count() or 1
    if config.threads > cores:
        warnings.append(f"--threads {config.threads} is more than {target.where}'s {cores} "
                        "cores: threads will share cores and times will be noisy")
    if target.emulated:
        warnings.append(f"target {target.name} is emulated: its times say nothing of real "
                        "hardware (rows are marked emulated); only its numerics count")
    return Plan(config, suite, specs, target, made, output, given, warnings)


def _check_memory(specs: list[ConvSpec]) -> None:
    """Refuse a layer whose buffers cannot fit, before anything runs: a worker would be killed
    by the kernel's OOM killer, or the machine would swap for hours."""
    available = memory_bytes()
    if not available:
        return
    for spec in {s.id: s for s in specs}.values():
        need = 2 * spec.bytes + spec.reference_bytes
        if need > 0.8 * available:
            raise UserError(f"layer {spec.label} needs about {need / 1e9:.1f} GB (its buffers and "
                            f"float64 references), more than this machine's {available / 1e9:.1f} "
                            "GB allows; lower --batch or --filter it out")


def ensure_peaks(p: Plan, on_measure=lambda: None) -> None:
    """Measured once per target fingerprint and cached; a few seconds the first time."""
    if p.peaks is None:
        p.peaks = peaks.for_run(p.target, p.config.threads, on_measure=on_measure)


def metadata(p: Plan) -> dict:
    versions = {k: v for b in p.backends.values() for k, v in b.versions().items()}
    meta = env.collect(p.config.threads) | p.target.facts()
    meta |= {"suite": p.suite.name, "suite_path": str(p.suite.path), "target": p.target.name,
             "where": p.target.where, "emulated": p.target.emulated,
             "backends": list(p.backends), "filter": p.config.filter or "",
             "batch": p.config.batch, "budget": vars(p.config.budget),
             "processes": p.config.processes, "cache": p.config.cache, "versions": versions,
             "peaks": p.peaks.to_dict() if p.peaks else None}
    meta["fingerprint"] = env.fingerprint({**p.target.fingerprint_facts(), "versions": versions,
                                           "threads": p.config.threads, "target": p.target.name})
    return meta


def execute(p: Plan, watch: Watcher = Quiet()) -> results.RunWriter:
    """Build, then measure every (shape, backend); lines are on disk as soon as measured."""
    ensure_peaks(p)
    writer = results.RunWriter(p.output, metadata(p))
    try:
        jobs, lines = _build_all(p, writer, watch)
        _measure_all(p, jobs, lines, writer, watch)
    except KeyboardInterrupt:
        _finish(p, writer, "interrupted")
        raise
    _finish(p, writer)
    return writer


def _finish(p: Plan, writer: results.RunWriter, status: str = "complete") -> None:
    writer.finish(status, decorate=lambda row: row | _roof(row, p))
    shutil.rmtree(p.work_dir, ignore_errors=True)


def _roof(row: dict, p: Plan) -> dict:
    return roofline.row_columns(row["flops"], row["bytes"], row["dtype"], row["median_s"], p.peaks)


def _line(spec: ConvSpec, backend: str, built: Built | None, p: Plan) -> dict:
    """The columns every line of one (layer, kernel) shares."""
    return {"suite": p.suite.name, **spec.describe(), "backend": backend, "target": p.target.name,
            "threads": p.config.threads, "variant": built.variant if built else "",
            "cache": p.config.cache, "clock": built.clock if built else "",
            "emulated": bool(p.target.emulated),
            **(built.columns if built else {}),
            "check": "", "max_abs_err": math.nan, "max_rel_err": math.nan, "error": "",
            "samples_s": [], "number": 0, "process": -1}


def _layers(p: Plan, spec_id: str) -> list[ConvSpec]:
    return [s for s in p.specs if s.id == spec_id]


def _build_all(p: Plan, writer, watch) -> tuple[list[workers.Job], dict]:
    """Every kernel built here, in this process (tuning included); a kernel that cannot be built
    is an error row and the run goes on. Returns the jobs and the line columns of each."""
    jobs, lines = [], {}
    watch.stage(f"building {len(p.shapes) * len(p.backends)} kernels", len(p.shapes) * len(p.backends))
    for spec in p.shapes:
        for name, backend in p.backends.items():
            watch.progress(f"building {spec.label[:40]} [{name}]")
            try:
                built = backend.build(spec)
            except (KeyboardInterrupt, UserError):
                raise
            except Unsupported as exc:  # not this backend's kind of workload: said, not failed
                line = _line(spec, name, None, p) | {"check": "skipped", "error": str(exc)}
                for layer in _layers(p, spec.id):
                    writer.add(line | layer.describe())
                watch.step(f"{spec.label} [{name}]")
                continue
            except Exception as exc:  # one broken kernel must not lose the rest of the sweep
                line = _line(spec, name, None, p) | {"error": workers.describe_error(exc)}
                for layer in _layers(p, spec.id):
                    writer.add(line | layer.describe())
                watch.step(f"{spec.label} [{name}]", line)
                continue
            writer.add_curve(built.curve)
            for note in built.notes:
                watch.note(f"{spec.label} [{name}]: {note}")
            jobs.append(workers.Job((spec.id, name), spec, built.make, "", built.runtime_env,
                                    built.clock))
            lines[(spec.id, name)] = _line(spec, name, built, p)
            watch.step(f"{spec.label} [{name}]")
    return jobs, lines


def _measure_all(p: Plan, jobs: list[workers.Job], lines: dict, writer, watch) -> None:
    if not jobs:
        return
    p.work_dir.mkdir(parents=True, exist_ok=True)
    watch.stage("computing float64 references", len({j.spec.id for j in jobs}))
    saved = {}
    for job in jobs:
        if job.spec.id not in saved:
            watch.progress(f"reference outputs of {job.spec.label[:40]}")
            saved[job.spec.id] = str(verify.expected(job.spec).save(p.work_dir / f"{job.spec.id}.npz"))
            watch.step(job.spec.label)
        job.expected = saved[job.spec.id]
    settings = workers.Settings(p.config.processes, p.config.budget, p.config.cache,
                                p.config.threads, p.target.kernel_timeout_s or KERNEL_TIMEOUT_S)
    watch.stage(f"measuring in {p.config.processes} process(es)", len(jobs) * p.config.processes)

    def record(outcome: workers.Outcome) -> None:
        line = lines[outcome.key] | {
            "process": outcome.process, "check": outcome.check, "error": outcome.error,
            "max_abs_err": outcome.max_abs_err, "max_rel_err": outcome.max_rel_err,
            "samples_s": outcome.samples_s or [], "number": outcome.number,
            **samples.summary(outcome.samples_s or [])}
        for layer in _layers(p, outcome.key[0]):
            writer.add(line | layer.describe())
        watch.step(f"{line['layer']} [{line['backend']}] process {outcome.process + 1}", line)

    workers.measure(jobs, p.target, settings, record)
