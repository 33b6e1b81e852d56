"""Tuning databases and budgets for the `tvm-tuned` backend and `pwbench tune`.

A database is a directory holding MetaSchedule's JSON files plus pwbench's own two files:
  fingerprint.json  the TVM target string, TVM version and CPU model it was tuned for
  layers.json       per layer and design space (the spec id; `<spec id>@structured` for the
                    structured space): trials done, tuning seconds, the best-latency curve
One database per fingerprint, under the tuning root (`--tuning-dir`, default
<pwbench cache dir>/tuning): MetaSchedule's lookup ignores the target, so a database is only ever
opened by a run whose fingerprint matches, and one that does not match is refused, never applied.

Layers are tuned one at a time (`ensure_tuned`: one task set per layer, its own cost model), or
a suite's layers as one task set (`tune_suite`: the gradient task scheduler shares the suite's
trials, one cost model learns from all of them); either way through one tuning.Tuner, whose
workers live as long as the database is open.
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
    name = spec.get("mcpu") or spec.get("arch") or spec.get("kind", "target")
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
        path = self.dir / FINGERPRINT
        if not path.exists():
            return
        stored = _read_json(path)
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

    def record(self, spec: ConvSpec, space: str = "default") -> LayerRecord | None:
        return self.layers.get(record_key(spec, space))

    def save(self, spec: ConvSpec, space: str, record: LayerRecord) -> None:
        self.layers[record_key(spec, space)] = record
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            files.write_json(self.dir / FINGERPRINT, self.fingerprint, indent=1)
            files.write_json(self.dir / LAYERS, {k: vars(v) for k, v in self.layers.items()})
        except OSError as exc:
            raise UserError(f"cannot write the tuning database {self.dir}: "
                            f"{exc.strerror or exc}; give another --tuning-dir") from None

    def schedule(self, spec: ConvSpec):
        if self.tvm_db is None:
            self.tvm_db = compiler.open_database(self.dir)
        return compiler.best_schedule(self.tvm_db, spec, self.target)

    def structured(self, plan: spaces.Plan):
        """(the winning task, its best schedule) over a layer's structured tasks, or None."""
        if self.tvm_db is None:
            self.tvm_db = compiler.open_database(self.dir)
        found = tuning.best(self.tvm_db, [_module(t.func()) for t in plan.tasks])
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
    schedule: object
    plan: spaces.Plan = spaces.Plan("default")
    task: spaces.Task | None = None  # structured: the (ic_bn, oc_bn) task that won


def _enough(record: LayerRecord | None, budget: Budget) -> bool:
    return bool(record) and (record.trials >= budget.trials or record.asked >= budget.trials)


def ensure_tuned(spec: ConvSpec, db: Database, budget: Budget, threads: int,
                 on_progress=lambda trials, best_s: None, space: str = "default") -> Outcome:
    """The layer's best schedule in `space` (the structured space falls back to the default one
    for a layer it does not claim: Outcome.plan says so): from the database when it holds the
    trials asked for, else tuned now, alone (continuing from what it holds). Ctrl-C ends the
    current batch, saves, re-raises."""
    plan = spaces.plan(spec, db.target, space)
    record = db.record(spec, plan.space)
    if not _enough(record, budget):
        if budget.seconds_left <= 0:
            if not record and plan.space == "default":  # (structured: its first point, untuned)
                raise RuntimeError("the --tune-minutes budget was spent before this layer was tuned")
        else:
            _tune(db, [(spec, plan)], budget, threads, lambda key, trials, best: on_progress(trials, best))
            return outcome(spec, db, plan, "tuned")
    return outcome(spec, db, plan, "database")


def tune_suite(specs: list[ConvSpec], db: Database, budget: Budget, threads: int, space: str,
               on_progress=lambda key, trials, best_s: None) -> dict[str, str]:
    """Every layer that lacks trials, tuned as one task set for budget.trials per layer in all
    (the task scheduler decides which layer gets them). Returns spec id -> "tuned" for the
    layers it tuned; the others are then taken from the database by `outcome`."""
    todo = []
    for spec in {s.id: s for s in specs}.values():
        plan = spaces.plan(spec, db.target, space)
        if not _enough(db.record(spec, plan.space), budget):
            todo.append((spec, plan))
    if todo and budget.seconds_left > 0:
        _tune(db, todo, budget, threads, on_progress)
    return {spec.id: "tuned" for spec, _ in todo}


def outcome(spec: ConvSpec, db: Database, plan: spaces.Plan, source: str) -> Outcome:
    """The best schedule the database holds for the layer in its plan's space."""
    record = db.record(spec, plan.space) or LayerRecord()
    if plan.space == "default":
        return Outcome(source, record, _schedule(db, spec), plan)
    found = db.structured(plan)
    if found is None:  # the budget ran out before its first trial: the structure, untuned
        task = plan.tasks[0]
        schedule = spaces.fixed(task, task.structures[0], task.reg_choices[-1])
        return Outcome("untuned", record, schedule, plan, task)
    return Outcome(source, record, found[1], plan, found[0])


def _schedule(db: Database, spec: ConvSpec):
    schedule = db.schedule(spec)
    if schedule is None:
        raise RuntimeError(f"tuning database {db.dir} holds no valid schedule for {spec.id}")
    return schedule


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
    records, specs, best = {}, {}, {}
    for spec, plan in layers:
        key = record_key(spec, plan.space)
        records[key] = db.record(spec, plan.space) or LayerRecord()
        specs[key] = (spec, plan.space)
        best[key] = min((c[2] for c in records[key].curve if c[2] is not None), default=math.inf)
        db.save(spec, plan.space, records[key])  # the fingerprint goes in before any record
    interrupted = []

    def on_batch(key, seconds, batch_s):
        record = records[key]
        record.tune_s += batch_s
        for s in seconds:
            record.trials += 1
            best[key] = min(best[key], s) if s is not None else best[key]
            record.curve.append([record.trials, record.tune_s,
                                 best[key] if best[key] < math.inf else None])
        db.save(*specs[key], record)
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
                    db.save(*specs[key], records[key])
    finally:
        signal.signal(signal.SIGINT, previous)
    db.tvm_db = None  # reopen: the tuner appended records
    if interrupted:
        raise KeyboardInterrupt
    if budget.seconds_left > 0:  # not cut short: this budget is done, even if a space ran out
        for key, record in records.items():
            if record.trials > 0:
                record.asked = max(record.asked, budget.trials)
            db.save(*specs[key], record)


def curve_rows(spec: ConvSpec, backend: str, target: str, record: LayerRecord,
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
