"""Tuning databases and budgets for the `tvm-tuned` backend and `pwbench tune`.

A database is a directory holding MetaSchedule's JSON files plus pwbench's own two files:
  fingerprint.json  the TVM target string, TVM version and the target's tuning facts (CPU model
                    and id; GPU model and CUDA toolkit, the arch being in the target string)
  layers.json       per record key (`record_key`, `relax.key`): trials done, tuning seconds,
                    the best-latency curve
One database per fingerprint, under the tuning root (`--tuning-dir`, default
<pwbench cache dir>/tuning): MetaSchedule's lookup ignores the target, so a database is only ever
opened by a run whose fingerprint matches, and one that does not match is refused, never applied.

Single layers (tvm-tuned) and blocks or layers through Relax (tvm-relax-tuned: the fused
PrimFuncs of a whole graph, relax.Tuner) share one database per fingerprint and one record format.
`layers.json` is keyed per workload and design space: the spec id for a TOPI layer in the default
space, `<spec id>@structured` in the structured one, `relax:<workload id>` through Relax (the
same conv is a different PrimFunc there, so one record must not stand for the other), and a
Relax record's trials are per task.

On a CPU, layers are tuned one at a time (`ensure_tuned`: one task set per layer, its own cost
model), or a suite's layers as one task set (`tune_suite`: the gradient task scheduler shares the
suite's trials, one cost model learns from all of them); either way through one tuning.Tuner,
whose workers live as long as the database is open. A GPU layer and a Relax workload are tuned
by their own tuner (compiler.LayerTuner with the CUDA builder, relax.Tuner), one at a time.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from pwbench import env, files
from pwbench.tvm_bridge import compiler, spaces, tuning
from pwbench.errors import UserError
from pwbench.workloads.spec import ConvSpec

FINGERPRINT, LAYERS = "fingerprint.json", "layers.json"


def default_root() -> Path:
    return env.cache_dir() / "tuning"


def fingerprint(target: dict, hardware: dict) -> dict:
    """What a database is only valid for: the TVM target string (with its thread count), the TVM
    version and the hardware's fingerprint facts (CPU model and id, or GPU and driver, or board)."""
    return {"target_string": compiler.target_string(target), "tvm": compiler.VERSION, **hardware}


def database_dir(root: Path, print_: dict) -> Path:
    """The database for a fingerprint. A root that is itself a database is used as given (a
    database handed over as an artifact), and then must match the fingerprint too."""
    root = Path(root)
    if (root / FINGERPRINT).exists():
        return root
    digest = hashlib.sha256(json.dumps(print_, sort_keys=True).encode()).hexdigest()[:10]
    spec = json.loads(print_["target_string"])
    name = (spec.get("mcpu") or spec.get("arch") or str(spec.get("mtriple", "")).split("-")[0]
            or spec.get("kind", "target"))
    return root / f"tvm{print_['tvm']}-{name}-{digest}"


def record_key(spec: ConvSpec, space: str) -> str:
    """A layer's key in layers.json: the spec id for the default space (as databases made before
    the structured space), `<spec id>@<space>` otherwise."""
    return spec.id if space == "default" else f"{spec.id}@{space}"


@dataclass
class LayerRecord:
    trials: int = 0
    tune_s: float = 0.0  # the seconds of this layer's own batches (searching, building, running)
    curve: list = field(default_factory=list)  # [trial, elapsed_s, best_s]
    asked: int = 0  # the trials per layer of the last tuning that ended without being cut short
    wall_s: float = 0.0  # its share of the tuning sessions' wall time (session / its layers)


class Database:
    """One tuning database, opened (and checked) once per run."""

    def __init__(self, root: Path | None, target: dict, hardware: dict):
        self.target = target
        self.fingerprint = fingerprint(target, hardware)
        self.dir = database_dir(root or default_root(), self.fingerprint)
        self._check_fingerprint()
        self.layers = self._read_layers()
        for name in ("database_workload.json", "database_tuning_record.json"):
            _check_json_lines(self.dir / name)
        self.tvm_db = compiler.open_database(self.dir) if self.layers else None

    def _check_fingerprint(self) -> None:
        """A database made for another setup is refused. A fact this machine cannot know (None:
        no GPU here to name) is taken from the database instead, and recorded with what is
        built from it (a kernel bundle then runs only on that GPU)."""
        path = self.dir / FINGERPRINT
        if not path.exists():
            return
        stored = _read_json(path)
        self.fingerprint |= {k: stored.get(k) for k, v in self.fingerprint.items() if v is None}
        wrong = [f"{k} {stored.get(k)!r} (this run: {v!r})" for k, v in self.fingerprint.items()
                 if stored.get(k) != v]
        if wrong:
            raise UserError(f"tuning database {self.dir} was made for another setup and is not "
                            f"applied: {'; '.join(wrong)}; give another --tuning-dir")

    def _read_layers(self) -> dict[str, LayerRecord]:
        path = self.dir / LAYERS
        if not path.exists():
            return {}
        data = _read_json(path)
        try:
            return {k: LayerRecord(int(v["trials"]), float(v["tune_s"]), list(v["curve"]),
                                   int(v.get("asked", 0)), float(v.get("wall_s", v["tune_s"])))
                    for k, v in data.items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"tuning database {path} is corrupted (unexpected content); "
                            "delete that directory to tune again") from None

    def record(self, key: str) -> LayerRecord | None:
        return self.layers.get(key)

    def save(self, key: str, record: LayerRecord) -> None:
        self.layers[key] = record
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            files.write_json(self.dir / FINGERPRINT, self.fingerprint, indent=1)
            files.write_json(self.dir / LAYERS, {k: vars(v) for k, v in self.layers.items()})
        except OSError as exc:
            raise UserError(f"cannot write the tuning database {self.dir}: "
                            f"{exc.strerror or exc}; give another --tuning-dir") from None

    def open_tvm(self):
        """MetaSchedule's JSON database in this directory (reopened after tuning appended to it)."""
        if self.tvm_db is None:
            self.tvm_db = compiler.open_database(self.dir)
        return self.tvm_db

    def structured(self, plan: spaces.Plan):
        """(the winning task, its best schedule) over a layer's structured tasks, or None."""
        found = tuning.best(self.open_tvm(), [_module(t.func()) for t in plan.tasks])
        return None if found is None else (plan.tasks[found[0]], found[1])

    def tuner(self, threads: int, settings: tuning.Settings | None = None) -> tuning.Tuner:
        """The tuning session of this database (workers started on first use); `settings`
        replaces the search settings of the next session (scripts/suite_tuning.py)."""
        if settings is not None:
            self.close()
            self._tuner = tuning.Tuner(self.target, self.dir, threads, settings)
        if getattr(self, "_tuner", None) is None:
            self._tuner = tuning.Tuner(self.target, self.dir, threads)
        return self._tuner

    def close(self) -> None:
        if getattr(self, "_tuner", None) is not None:
            self._tuner.close()
            self._tuner = None


class Budget:
    """Trials per layer and an optional deadline for the whole suite (--tune-minutes)."""

    def __init__(self, trials: int, minutes: float | None = None):
        self.trials = trials
        self.deadline = time.monotonic() + minutes * 60 if minutes else math.inf

    @property
    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class Outcome:
    source: str  # "database" or "tuned"
    record: LayerRecord
    schedule: object  # a schedule, or a Relax executable (what the tuner's best() gave)
    plan: spaces.Plan = spaces.Plan("default")
    task: spaces.Task | None = None  # structured: the (ic_bn, oc_bn) task that won


def _enough(record: LayerRecord | None, budget: Budget) -> bool:
    return bool(record) and (record.trials >= budget.trials or record.asked >= budget.trials)


def ensure_tuned(spec, db: Database, budget: Budget, threads: int,
                 on_progress=lambda trials, best_s: None, space: str = "default",
                 cannot_measure: str | None = None, tuner=None, board=None) -> Outcome:
    """The layer's best schedule in `space` (the structured space falls back to the default one
    for a layer it does not claim: Outcome.plan says so): from the database when it holds the
    trials asked for, else tuned now, alone (continuing from what it holds). Ctrl-C ends the
    current batch, saves, re-raises. `cannot_measure` says why candidates cannot be measured
    here (no GPU): then what the database holds is used, and a layer it lacks is an error naming
    where to tune it. `tuner` tunes and compiles a workload its own way (relax.Tuner); a GPU
    layer gets compiler.LayerTuner, as does a layer of `board`, a target behind an RPC tracker
    whose boards measure the candidates (in the default space: the structured space's tuner
    measures on this machine)."""
    if tuner is not None:
        return _ensure_alone(spec, db, budget, threads, on_progress, cannot_measure, tuner)
    plan = spaces.plan(spec, db.target, space)
    if board is not None and plan.space != "default":
        plan = spaces.Plan("default", "the structured space is not tuned on RPC boards yet")
    if compiler.is_gpu(db.target) or board is not None:
        found = _ensure_alone(spec, db, budget, threads, on_progress, cannot_measure,
                              compiler.LayerTuner(spec, db.target, board))
        found.plan = plan
        return found
    record = db.record(record_key(spec, plan.space))
    if not _enough(record, budget):
        if budget.seconds_left <= 0:
            if not record and plan.space == "default":  # (structured: its first point, untuned)
                raise RuntimeError("the --tune-minutes budget was spent before this layer was tuned")
        else:
            _tune(db, [(spec, plan)], budget, threads, lambda key, trials, best: on_progress(trials, best))
            return outcome(spec, db, plan, "tuned")
    return outcome(spec, db, plan, "database")


def _ensure_alone(spec, db, budget, threads, on_progress, cannot_measure, tuner) -> Outcome:
    record = db.record(tuner.key)
    if record and (record.trials >= budget.trials or cannot_measure):
        return Outcome("database", record, _best(db, spec, tuner))
    if cannot_measure:
        raise RuntimeError(f"tuning database {db.dir} holds no schedule for this layer, and it "
                           f"cannot be tuned here, since tuning measures candidates on the target "
                           f"({cannot_measure.split(';')[0]}): tune it where the target runs "
                           "('pwbench tune') and give that database with --tuning-dir")
    if budget.seconds_left <= 0:
        if record:
            return Outcome("database", record, _best(db, spec, tuner))
        raise RuntimeError("the --tune-minutes budget was spent before this layer was tuned")
    record = _tune_alone(db, budget, threads, record or LayerRecord(), on_progress, tuner)
    return Outcome("tuned", record, _best(db, spec, tuner))


def tune_suite(specs: list[ConvSpec], db: Database, budget: Budget, threads: int, space: str,
               on_progress=lambda key, trials, best_s: None) -> dict[str, str]:
    """Every layer that lacks trials, tuned as one task set for budget.trials per layer in all
    (the task scheduler decides which layer gets them). Returns spec id -> "tuned" for the
    layers it tuned; the others are then taken from the database by `outcome`. A GPU's layers
    are tuned one at a time, by ensure_tuned: nothing is done here."""
    if compiler.is_gpu(db.target):
        return {}
    todo = []
    for spec in {s.id: s for s in specs}.values():
        plan = spaces.plan(spec, db.target, space)
        if not _enough(db.record(record_key(spec, plan.space)), budget):
            todo.append((spec, plan))
    if todo and budget.seconds_left > 0:
        _tune(db, todo, budget, threads, on_progress)
    return {spec.id: "tuned" for spec, _ in todo}


def outcome(spec: ConvSpec, db: Database, plan: spaces.Plan, source: str) -> Outcome:
    """The best schedule the database holds for the layer in its plan's space."""
    record = db.record(record_key(spec, plan.space)) or LayerRecord()
    if plan.space == "default":
        return Outcome(source, record, _best(db, spec, compiler.LayerTuner(spec, db.target)), plan)
    found = db.structured(plan)
    if found is None:  # the budget ran out before its first trial: the structure, untuned
        task = plan.tasks[0]
        schedule = spaces.fixed(task, task.structures[0], task.reg_choices[-1])
        return Outcome("untuned", record, schedule, plan, task)
    return Outcome(source, record, found[1], plan, found[0])


def _best(db: Database, spec, tuner):
    best = tuner.best(db)
    if best is None:
        raise RuntimeError(f"tuning database {db.dir} holds no valid schedule for {spec.id}")
    return best


def _tune_alone(db, budget, threads, record, on_progress, tuner) -> LayerRecord:
    """One workload tuned by its own tuner (a GPU layer, a Relax graph)."""
    db.dir.mkdir(parents=True, exist_ok=True)
    db.save(tuner.key, record)  # the fingerprint goes in before any record
    start, base_trials, base_s = time.monotonic(), record.trials, record.tune_s
    best = min((c[2] for c in record.curve if c[2] is not None), default=math.inf)
    measured = record.curve[-1][0] if record.curve else 0
    interrupted = []

    def on_batch(seconds, best_s=None, trials=None):
        """best_s: the tuner's own estimate (a block's: the sum over its tasks of weight x best),
        else the best candidate so far; trials: the tuner's count (a block's: the fewest any
        task has had), else one per candidate. The curve has one point per candidate."""
        nonlocal best, measured
        elapsed = base_s + time.monotonic() - start
        if best_s is not None:
            best = best_s
        for s in seconds:
            measured += 1
            if best_s is None and s is not None:
                best = min(best, s)
            record.curve.append([measured, elapsed, best if best < math.inf else None])
        record.trials = base_trials + trials if trials is not None else record.trials + len(seconds)
        record.tune_s = record.wall_s = elapsed
        db.save(tuner.key, record)
        on_progress(record.trials, best)
        return not interrupted and budget.seconds_left > 0

    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        tuner.tune(db.dir, budget.trials - base_trials, threads, on_batch)
    finally:
        signal.signal(signal.SIGINT, previous)
    db.tvm_db = None  # reopen: the tuner appended records
    if interrupted:
        raise KeyboardInterrupt
    return record


def _module(func):
    import tvm

    return tvm.IRModule({"main": func})


def _task_defs(spec: ConvSpec, plan: spaces.Plan, ms, trials: int, enum_batch: int):
    """The layer's MetaSchedule tasks. A structured layer's tasks take rounds small enough that
    the task scheduler's first round over every task fits in the layer's trials."""
    key = record_key(spec, plan.space)
    if plan.space == "default":
        return [tuning.TaskDef(key, spec.id, _module(compiler.primfunc(spec)), "post-order-apply",
                               "evolutionary", float(spec.count))]
    batch = max(1, min(enum_batch, trials // max(len(plan.tasks), 1)))
    return [tuning.TaskDef(key, t.name, _module(t.func()), spaces.space(t, ms), "enumerate",
                           float(spec.count), batch) for t in plan.tasks]


def _tune(db: Database, layers: list, budget: Budget, threads: int, on_progress) -> None:
    """One task set for these (spec, plan) layers; each batch is saved as it is measured, to the
    record of the layer it belongs to, with the seconds it took. Layers in the default space
    (asked for, or fallbacks) are a task set of their own, after the structured ones: their
    evolutionary search and XGBoost model would otherwise cost the structured set seconds per
    batch (measured: 155 s before the first batch of a set with one fallback layer, 50 s without)."""
    db.dir.mkdir(parents=True, exist_ok=True)
    tuner = db.tuner(threads)
    records, best = {}, {}
    for spec, plan in layers:
        key = record_key(spec, plan.space)
        records[key] = db.record(key) or LayerRecord()
        best[key] = min((c[2] for c in records[key].curve if c[2] is not None), default=math.inf)
        db.save(key, records[key])  # the fingerprint goes in before any record
    interrupted = []

    def on_batch(key, seconds, batch_s):
        record = records[key]
        record.tune_s += batch_s
        for s in seconds:
            record.trials += 1
            best[key] = min(best[key], s) if s is not None else best[key]
            record.curve.append([record.trials, record.tune_s,
                                 best[key] if best[key] < math.inf else None])
        db.save(key, record)
        on_progress(key, record.trials, best[key])
        return not interrupted and budget.seconds_left > 0

    left = {key: max(budget.trials - r.trials, 1) for key, r in records.items()}
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        for space in ("structured", "default"):
            chosen = [(spec, plan) for spec, plan in layers if plan.space == space]
            keys = [record_key(spec, plan.space) for spec, plan in chosen]
            if not chosen or interrupted or budget.seconds_left <= 0:
                continue
            per_layer = [_task_defs(spec, plan, tuner.ms, left[key], tuner.settings.enum_batch)
                         for (spec, plan), key in zip(chosen, keys)]
            # every layer's first task, then every layer's second, ...: the task scheduler's
            # first round goes in this order, so a deadline leaves no layer without a trial
            defs = [d for group in itertools.zip_longest(*per_layer) for d in group if d]
            # an evolutionary round never larger than a layer's trials: every layer gets one
            start = time.monotonic()
            try:
                tuner.tune(defs, sum(left[k] for k in keys), on_batch,
                           batch=min(left[k] for k in keys),
                           stop=lambda: bool(interrupted) or budget.seconds_left <= 0)
            finally:
                for key in keys:
                    records[key].wall_s += (time.monotonic() - start) / len(keys)
                    db.save(key, records[key])
    finally:
        signal.signal(signal.SIGINT, previous)
    db.tvm_db = None  # reopen: the tuner appended records
    if interrupted:
        raise KeyboardInterrupt
    if budget.seconds_left > 0:  # not cut short: this budget is done, even if a space ran out
        for key, record in records.items():
            if record.trials > 0:
                record.asked = max(record.asked, budget.trials)
            db.save(key, record)


def curve_rows(spec, backend: str, target: str, record: LayerRecord,
               variant: str = "") -> list[dict]:
    """Rows of tuning_curves.csv (columns in results/README.md)."""
    return [{"spec_id": spec.id, "layer": spec.label, "backend": backend, "target": target,
             "trial": trial, "elapsed_s": elapsed, "best_s": best, "variant": variant}
            for trial, elapsed, best in record.curve if best is not None]


def _check_json_lines(path: Path) -> None:
    """MetaSchedule's files are JSON lines; TVM skips a line cut short (a crash mid-write, a
    partial copy) without a word, which would silently drop records: refuse the database."""
    if not path.exists():
        return
    try:
        lines = path.read_text().splitlines()
        for line in lines:
            if line.strip():
                json.loads(line)
    except (OSError, ValueError) as exc:
        raise UserError(f"tuning database file {path} is corrupted ({exc}); "
                        "delete that directory to tune again") from None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"tuning database file {path} is corrupted ({exc}); "
                        "delete that directory to tune again") from None
