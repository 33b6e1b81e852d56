"""Tuning databases and budgets for the `tvm-tuned` backend and `pwbench tune`.

A database is a directory holding MetaSchedule's JSON files plus pwbench's own two files:
  fingerprint.json  the TVM target string, TVM version and the target's tuning facts (CPU model
                    and id; GPU model and CUDA toolkit, the arch being in the target string)
  layers.json       per spec id: trials done, tuning seconds, the best-latency curve
One database per fingerprint, under the tuning root (`--tuning-dir`, default
<pwbench cache dir>/tuning): MetaSchedule's lookup ignores the target, so a database is only ever
opened by a run whose fingerprint matches, and one that does not match is refused, never applied.

Single layers (tvm-tuned: one TOPI PrimFunc, compiler.LayerTuner) and blocks or layers through
Relax (tvm-relax-tuned: the fused PrimFuncs of a whole graph, relax.Tuner) share one database per
fingerprint and one record format. `layers.json` is keyed by the tuner's key: the workload id
for a TOPI layer, `relax:<workload id>` through Relax (the same conv is a different PrimFunc
there, so one record must not stand for the other), and a Relax record's trials are per task.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from pwbench import env, files
from pwbench.tvm_bridge import compiler
from pwbench.errors import UserError

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


@dataclass
class LayerRecord:
    trials: int = 0
    tune_s: float = 0.0
    curve: list = field(default_factory=list)  # [trial, elapsed_s, best_s]


class Database:
    """One tuning database, opened (and checked) once per run."""

    def __init__(self, root: Path | None, target: dict, hardware: dict):
        self.target = target
        self.fingerprint = fingerprint(target, hardware)
        self.dir = database_dir(root or default_root(), self.fingerprint)
        self._check_fingerprint()
        self.layers = self._read_layers()
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
            return {k: LayerRecord(int(v["trials"]), float(v["tune_s"]), list(v["curve"]))
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
    schedule: object  # what the tuner's best() gave: a schedule, or a Relax executable


def ensure_tuned(spec, db: Database, budget: Budget, threads: int,
                 on_progress=lambda trials, best_s: None, cannot_measure: str | None = None,
                 tuner=None) -> Outcome:
    """The workload's best schedule: from the database when it holds the trials asked for, else
    tuned now (continuing from what it holds). Ctrl-C ends the current batch, saves, re-raises.
    `cannot_measure` says why candidates cannot be measured here (no GPU): then what the
    database holds is used, and a layer it lacks is an error naming where to tune it. `tuner`
    tunes and compiles it (default: the single layer's TOPI PrimFunc)."""
    tuner = tuner or compiler.LayerTuner(spec, db.target)
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
    record = _tune(spec, db, budget, threads, record or LayerRecord(), on_progress, tuner)
    return Outcome("tuned", record, _best(db, spec, tuner))


def _best(db: Database, spec, tuner):
    best = tuner.best(db)
    if best is None:
        raise RuntimeError(f"tuning database {db.dir} holds no valid schedule for {spec.id}")
    return best


def _tune(spec, db, budget, threads, record, on_progress, tuner) -> LayerRecord:
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
        record.tune_s = elapsed
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


def curve_rows(spec, backend: str, target: str, record: LayerRecord) -> list[dict]:
    """Rows of tuning_curves.csv (columns in results/README.md)."""
    return [{"spec_id": spec.id, "layer": spec.label, "backend": backend, "target": target,
             "trial": trial, "elapsed_s": elapsed, "best_s": best}
            for trial, elapsed, best in record.curve if best is not None]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"tuning database file {path} is corrupted ({exc}); "
                        "delete that directory to tune again") from None
