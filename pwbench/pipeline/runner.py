"""The pipeline: suite -> specs -> backend.build -> (in worker processes) make, verify, time ->
per-process lines -> pooled rows.

`plan` checks everything that can be wrong before anything is measured (bad input fails in one
line, with nothing written); `execute` builds every kernel in this process (compiling, tuning),
computes each shape's reference outputs once, then measures every kernel in `processes` rounds
of fresh worker processes (measure/workers.py), writing each process's result as it arrives.

`clock = "instructions"` counts instead of timing (measure/instructions.py): the target is the
same one as valgrind runs it (`Target.counted`: the ISA capped), one thread, hot caches, one
process per round under callgrind; rows get count columns and no time.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pwbench import backends, env, samples, scratch, targets
from pwbench.analysis import roofline
from pwbench.backends.base import Built, NoEvents, Options, Unsupported
from pwbench.errors import UserError
from pwbench.measure import instructions, timing, verify, workers
from pwbench.pipeline import checks
from pwbench.store import results
from pwbench.targets import peaks
from pwbench.workloads import suites
from pwbench.workloads.spec import ConvSpec

DEFAULT_PROCESSES = checks.DEFAULT_PROCESSES
KERNEL_TIMEOUT_S = 600.0  # a worker silent this long on one kernel is killed: an error row


@dataclass
class RunConfig:
    suite: str = suites.DEFAULT_SUITE
    target: str = "cpu"
    backends: tuple[str, ...] | None = None  # None: torch, and a kernel bundle's backends
    filter: str | None = None
    batch: int | None = None
    layout: str | None = None
    dtype: str | None = None
    kernels: Path | None = None  # a kernel bundle (pwbench build): its layers and kernels
    threads: int | None = field(default_factory=lambda: os.cpu_count() or 1)  # None: the
    output: Path | None = None  # clock's default (all cores; 1 under the instruction clock)
    budget: timing.Budget = timing.Budget()
    processes: int | None = DEFAULT_PROCESSES  # None: the clock's default
    cache: str = "hot"
    clock: str = "time"  # or "instructions": counted under callgrind (measure/instructions.py)
    calls: int = instructions.DEFAULT_CALLS  # instruction clock: counted calls per kernel
    peaks_file: Path | None = None  # user-given peaks instead of measured ones
    backend_options: dict = field(default_factory=dict)  # a backend's own options, by group
    optional: tuple[str, ...] = ()  # backends left out with a note when unavailable here
    rpc: object = None  # a targets.board.Endpoint: kernels run on boards behind that tracker
    cuda_graphs: bool = False  # replay timed blocks from CUDA graphs (a GPU target's kernels)


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
    valgrind: instructions.Valgrind | None = None  # the instruction clock's, else None
    work_dir: Path | None = None  # the run's scratch (pwbench/scratch.py), made by execute

    @property
    def shapes(self) -> list[ConvSpec]:
        """The distinct shapes: a shape recurring under another name is measured once."""
        return list({s.id: s for s in self.specs}.values())


def plan(config: RunConfig, events=Quiet()) -> Plan:
    config = checks.clock_defaults(config)
    if config.processes < 1:
        raise UserError(f"--processes must be at least 1, got {config.processes}")
    if config.cache not in timing.CACHE_STATES:
        raise UserError(f"--cache must be one of {', '.join(timing.CACHE_STATES)}, got {config.cache!r}")
    target = targets.resolve(config.target, config.rpc)
    valgrind = None
    if config.clock == "instructions":
        target = target.counted()  # e.g. TVM kernels built for an AVX2 CPU (no AVX-512)
        valgrind = instructions.find(config.calls)
    target.prepare_process(config.threads)  # before torch or TVM start their thread pools
    if config.cuda_graphs and not target.graph_replay:
        raise UserError(f"--cuda-graphs replays CUDA kernels; target {target.name} runs on "
                        f"{target.where}: use --target cuda")
    if config.cache == "cold" and not target.can_evict:
        raise UserError(f"--cache cold: target {target.name} cannot empty its caches between "
                        "samples (a board's kernels are timed there); use --cache hot")
    kit = checks.bundle(config)
    suite = kit.suite() if kit else suites.load(config.suite, batch=config.batch,
                                                layout=config.layout, dtype=config.dtype)
    specs = suites.select(suite.layers, config.filter)
    if not specs:
        raise UserError(f"--filter {config.filter!r} selects none of the {len(suite.layers)} "
                        f"layers of suite {suite.name}")
    checks.check_memory(specs)
    warnings = []
    names = config.backends or ("torch", *(kit.backends if kit else ()))
    from_kit = [n for n in names if kit and n in kit.backends]
    targets.require_runnable(target)  # a missing GPU or board first: nothing else matters then
    classes = {}
    for name in names:
        reason = checks.optional_problem(name, target) if name in config.optional else None
        if reason:  # a default backend this machine or target lacks: said once, the run goes on
            warnings.append(f"{name} {reason}; running without it")
        elif name not in from_kit:
            classes[name] = backends.backend_class(name, target)
    if kit:
        for name in classes:
            if backends.REGISTRY[name].stack == "tvm":
                raise UserError(f"backend {name} is not in kernel bundle {kit.dir} (it holds "
                                f"{', '.join(kit.backends)}): build it into the bundle with "
                                f"'pwbench build --backend {name}'")
    output = config.output or results.default_dir(suite.name, target.name)
    work_dir = scratch.new()  # not under output: see pwbench/scratch.py
    options = Options(threads=config.threads, work_dir=work_dir, clock=config.clock,
                      extra=config.backend_options)
    # e.g. open a tuning database, or check a kernel bundle: a bad one fails here, once
    made = {name: (backends.from_bundle(kit, name, target, options, events) if name in from_kit
                   else classes[name](target, options, events))
            for name in names if name in from_kit or name in classes}
    given = peaks.load_file(config.peaks_file) if config.peaks_file else None
    warnings += checks.hardware_warnings(config, target)
    return Plan(config, suite, specs, target, made, output, given, warnings, valgrind, work_dir)


def ensure_peaks(p: Plan, on_measure=lambda: None) -> None:
    """Measured once per target fingerprint and cached; a few seconds the first time. Not for the
    instruction clock: its rows hold no time for a roofline."""
    if p.peaks is None and p.valgrind is None:
        p.peaks = peaks.for_run(p.target, p.config.threads, on_measure=on_measure)


def metadata(p: Plan) -> dict:
    versions = {k: v for b in p.backends.values() for k, v in b.versions().items()}
    meta = env.collect(p.config.threads) | p.target.facts()
    meta |= {"suite": p.suite.name, "suite_path": str(p.suite.path), "target": p.target.name,
             "where": p.target.where, "emulated": p.target.emulated,
             "backends": list(p.backends), "filter": p.config.filter or "",
             "kernel_bundle": str(p.config.kernels) if p.config.kernels else None,
             "batch": p.config.batch, "budget": vars(p.config.budget),
             "processes": p.config.processes, "cache": p.config.cache, "versions": versions,
             "cuda_graphs": p.config.cuda_graphs,
             "peaks": p.peaks.to_dict() if p.peaks else None, "clock": p.config.clock}
    facts = {**p.target.fingerprint_facts(), "versions": versions, "threads": p.config.threads,
             "target": p.target.name}
    if p.valgrind is not None:  # counts of another valgrind or clock are not comparable
        meta["instruction_clock"] = p.valgrind.facts()
        facts |= {"clock": p.config.clock, "valgrind": p.valgrind.version}
    meta["fingerprint"] = env.fingerprint(facts)
    return meta


def execute(p: Plan, watch: Watcher = Quiet()) -> results.RunWriter:
    """Build, then measure every (shape, backend); lines are on disk as soon as measured."""
    ensure_peaks(p)
    writer = results.RunWriter(p.output, metadata(p))
    scratch.claim(p.work_dir)
    try:
        jobs, lines = _build_all(p, writer, watch)
        _measure_all(p, jobs, lines, writer, watch)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP (cli/signals.py)
        _finish(p, writer, "interrupted")
        raise
    except BaseException as exc:  # e.g. the disk under the run directory is full
        _abandon(p, writer, exc)
        raise
    _finish(p, writer)
    return writer


def _finish(p: Plan, writer: results.RunWriter, status: str = "complete") -> None:
    writer.finish(status, decorate=lambda row: row | _roof(row, p))
    scratch.remove(p.work_dir)


def _abandon(p: Plan, writer: results.RunWriter, exc: BaseException) -> None:
    """A run stopped by an error: marked failed with what it measured, as far as the disk lets."""
    try:
        writer.meta["error"] = str(exc) or type(exc).__name__
        _finish(p, writer, "failed")
    except Exception:  # noqa: BLE001 - records.jsonl already holds every measured line
        pass
    scratch.remove(p.work_dir)


def _roof(row: dict, p: Plan) -> dict:
    return roofline.row_columns(row["flops"], row["bytes"], row["dtype"], row["median_s"], p.peaks,
                                row.get("compute", ""))


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
    _prepare_all(p, watch)
    watch.stage(f"building {len(p.shapes) * len(p.backends)} kernels", len(p.shapes) * len(p.backends))
    for spec in p.shapes:
        for name, backend in p.backends.items():
            watch.progress(f"building {spec.label[:40]} [{name}]")
            try:
                built = backend.build(spec)
                built = built if isinstance(built, list) else [built]
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
            for one in built:
                writer.add_curve(one.curve)
                shown = f"{name} {one.variant}".strip()
                for note in one.notes:
                    watch.note(f"{spec.label} {spec.layout} [{shown}]: {note}")
                key = (spec.id, name, one.variant)
                jobs.append(workers.Job(key, spec, one.make, "", one.runtime_env, one.clock))
                lines[key] = _line(spec, name, one, p)
            watch.step(f"{spec.label} [{name}]")
    return jobs, lines


def _prepare_all(p: Plan, watch) -> None:
    """Backends that work on the whole run at once (suite-wide tuning) do it before any build;
    one that fails there builds (and tunes) layer by layer instead."""
    for name, backend in p.backends.items():
        if not hasattr(backend, "prepare"):
            continue
        watch.progress(f"preparing {len(p.shapes)} workloads [{name}]")
        try:
            backend.prepare(p.shapes)
        except (KeyboardInterrupt, UserError):
            raise
        except Exception as exc:
            watch.note(f"[{name}] preparing the suite failed ({workers.describe_error(exc)}); "
                       "building layer by layer")


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
                                p.config.threads, p.target.kernel_timeout_s or KERNEL_TIMEOUT_S,
                                p.valgrind, p.work_dir, p.config.cuda_graphs,
                                p.target.startup_timeout_s or workers.STARTUP_TIMEOUT_S)
    what = "counting instructions under callgrind" if p.valgrind else "measuring"
    watch.stage(f"{what} in {p.config.processes} process(es)", len(jobs) * p.config.processes)

    def record(outcome: workers.Outcome) -> None:
        line = lines[outcome.key] | {
            "process": outcome.process, "check": outcome.check, "error": outcome.error,
            "max_abs_err": outcome.max_abs_err, "max_rel_err": outcome.max_rel_err,
            "samples_s": outcome.samples_s or [], "number": outcome.number,
            **outcome.columns, **samples.summary(outcome.samples_s or [])}
        if p.valgrind is not None:  # counted, not timed: per-call counts and their medians
            counts = outcome.counts or {}
            line |= {f"samples_{c}": list(counts.get(c, [])) for c in samples.COUNT_COLUMNS}
            line |= samples.count_summary(counts) | {"number": 1 if counts else 0}
        for layer in _layers(p, outcome.key[0]):
            writer.add(line | layer.describe())
        watch.step(f"{line['layer']} [{line['backend']}] process {outcome.process + 1}", line)

    workers.measure(jobs, p.target, settings, record)
