"""Tuning databases and budgets for the `tvm-tuned` backend and `pwbench tune`.

A database is a directory holding MetaSchedule's JSON files plus pwbench's own two files:
  fingerprint.json  the TVM target string, TVM version and CPU model it was tuned for
  layers.json       per spec id: trials done, tuning seconds, the best-latency curve
One database per fingerprint, under the tuning root (`--tuning-dir`, default
<pwbench cache dir>/tuning): MetaSchedule's lookup ignores the target, so a database is only ever
opened by a run whose fingerprint matches, and one that does not match is refused, never applied.
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
            return {k: LayerRecord(int(v["trials"]), float(v["tune_s"]), list(v["curve"]))
                    for k, v in data.items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"tuning database {path} is corrupted (unexpected content); "
                            "delete that directory to tune again") from None

    def record(self, spec: ConvSpec) -> LayerRecord | None:
        return self.layers.get(spec.id)

    def save(self, spec: ConvSpec, record: LayerRecord) -> None:
        self.layers[spec.id] = record
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


def ensure_tuned(spec: ConvSpec, db: Database, budget: Budget, threads: int,
                 on_progress=lambda trials, best_s: None, board=None) -> Outcome:
    """The layer's best schedule: from the database when it holds the trials asked for, else
    tuned now (continuing from what it holds). Ctrl-C ends the current batch, saves, re-raises.
    `board`: a target behind an RPC tracker, whose boards measure the candidates."""
    record = db.record(spec)
    if record and record.trials >= budget.trials:
        return Outcome("database", record, _schedule(db, spec))
    if budget.seconds_left <= 0:
        if record:
            return Outcome("database", record, _schedule(db, spec))
        raise RuntimeError("the --tune-minutes budget was spent before this layer was tuned")
    record = _tune(spec, db, budget, threads, record or LayerRecord(), on_progress, board)
    return Outcome("tuned", record, _schedule(db, spec))


def _schedule(db: Database, spec: ConvSpec):
    schedule = db.schedule(spec)
    if schedule is None:
        raise RuntimeError(f"tuning database {db.dir} holds no valid schedule for {spec.id}")
    return schedule


def _tune(spec, db, budget, threads, record, on_progress, board=None) -> LayerRecord:
    db.dir.mkdir(parents=True, exist_ok=True)
    db.save(spec, record)  # the fingerprint goes in before any record
    start, base_trials, base_s = time.monotonic(), record.trials, record.tune_s
    best = min((c[2] for c in record.curve), default=math.inf)
    interrupted = []

    def on_batch(seconds):
        nonlocal best
        elapsed = base_s + time.monotonic() - start
        for s in seconds:
            record.trials += 1
            best = min(best, s) if s is not None else best
            record.curve.append([record.trials, elapsed, best if best < math.inf else None])
        record.tune_s = elapsed
        db.save(spec, record)
        on_progress(record.trials, best)
        return not interrupted and budget.seconds_left > 0

    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        compiler.tune(spec, db.target, db.dir, budget.trials - base_trials, threads, on_batch,
                      board=board)
    finally:
        signal.signal(signal.SIGINT, previous)
    db.tvm_db = None  # reopen: the tuner appended records
    if interrupted:
        raise KeyboardInterrupt
    return record


def curve_rows(spec: ConvSpec, backend: str, target: str, record: LayerRecord) -> list[dict]:
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
