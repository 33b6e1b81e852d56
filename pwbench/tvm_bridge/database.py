"""Tuning databases on disk: persistence only (what is tuned, and how, is tuning.py's).

A database is a directory holding MetaSchedule's JSON files plus pwbench's own two files:
  fingerprint.json  the TVM target string, TVM version and the target's tuning facts (CPU model
                    and id; GPU model and CUDA toolkit, the arch being in the target string;
                    a board's facts)
  layers.json       per record key (a layer in a design space, `<spec id>@structured`, or a
                    Relax workload, `relax:<id>`): trials done, tuning seconds, the best-latency
                    curve
One database per fingerprint, under the tuning root (`--tuning-dir`, default
<pwbench cache dir>/tuning): MetaSchedule's lookup ignores the target, so a database is only ever
opened by a run whose fingerprint matches, and one that does not match is refused, never applied.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pwbench import env, files
from pwbench.errors import UserError
from pwbench.tvm_bridge import metaschedule, tvm_targets

FINGERPRINT, LAYERS = "fingerprint.json", "layers.json"
MS_FILES = ("database_workload.json", "database_tuning_record.json")


def default_root() -> Path:
    return env.cache_dir() / "tuning"


def fingerprint(target: dict, hardware: dict) -> dict:
    """What a database is only valid for: the TVM target string (with its thread count), the TVM
    version and the hardware's fingerprint facts (CPU model and id, or GPU and driver, or board)."""
    return {"target_string": tvm_targets.target_string(target), "tvm": tvm_targets.VERSION, **hardware}


def database_dir(root: Path, print_: dict) -> Path:
    """The database for a fingerprint. A root that is itself a database is used as given (a
    database handed over as an artifact), and then must match the fingerprint too."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"--tuning-dir {root} is a file, not a directory: give a directory "
                        "(tuning databases are kept under it)")
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
    tune_s: float = 0.0  # the seconds of this workload's own batches (searching, building, running)
    curve: list = field(default_factory=list)  # [trial, elapsed_s, best_s]
    asked: int = 0  # the trials per workload of the last tuning that ended without being cut short
    wall_s: float = 0.0  # its share of the tuning sessions' wall time (session / its workloads)

    @property
    def best_s(self) -> float:
        return min((c[2] for c in self.curve if c[2] is not None), default=float("inf"))


class Database:
    """One tuning database, opened (and checked) once per run."""

    def __init__(self, root: Path | None, target: dict, hardware: dict):
        self.target = target
        self.fingerprint = fingerprint(target, hardware)
        self.dir = database_dir(root or default_root(), self.fingerprint)
        self._check_fingerprint()
        self.layers = self._read_layers()
        for name in MS_FILES:
            _check_json_lines(self.dir / name)
        self._tvm = None

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

    def writable(self) -> None:
        """Raise a UserError (one line) when records could not be saved here: before tuning."""
        place = self.dir
        while not place.exists():
            place = place.parent
        if not place.is_dir() or not os.access(place, os.W_OK | os.X_OK):
            raise UserError(f"cannot write the tuning database {self.dir}: {place} is not a "
                            "writable directory; give another --tuning-dir")

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

    def tvm(self):
        """MetaSchedule's JSON database in this directory (reopened after a tuning appended to
        it: `changed`)."""
        if self._tvm is None:
            self._tvm = metaschedule.open_database(self.dir)
        return self._tvm

    def changed(self) -> None:
        self._tvm = None


def _check_json_lines(path: Path) -> None:
    """MetaSchedule's files are JSON lines; TVM skips a line cut short (a crash mid-write, a
    partial copy) without a word, which would silently drop records: refuse the database."""
    if not path.exists():
        return
    try:
        for line in path.read_text().splitlines():
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
