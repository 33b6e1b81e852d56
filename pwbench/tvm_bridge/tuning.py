"""What gets tuned, for how long, and what is kept: a run's workloads tuned into one database
through the one tuner (tuner.py), every finished batch saved with its seconds and curve.

A `Job` is one workload's share of a tuning: its record key in layers.json and its tasks (a layer
in the default space: one; in the structured space: one per channel-block pair; a Relax block:
one per fused PrimFunc, with its trials counted per task). `Session.tune` takes every job that
lacks the trials asked for and tunes them as task sets, one per kind of search (the structured
spaces' enumeration first, then MetaSchedule's evolutionary search, then per-task Relax sets:
a set mixing them would cost the enumerated ones the evolutionary search's seconds per batch,
155 s before the first batch of a set with one fallback layer, 50 s without). Jobs are
interleaved task by task, so the task scheduler's first round reaches every workload before a
deadline can cut it.

Budgets: `--trials` per workload and `--tune-minutes` for the whole run. Ctrl-C (SIGINT) or
SIGTERM during a tuning ends it after the current batch (every measured batch is already in the
database) and raises KeyboardInterrupt; the same command continues from there.
"""

from __future__ import annotations

import itertools
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass

from pwbench.tvm_bridge import tuner
from pwbench.tvm_bridge.database import Database, LayerRecord
from pwbench.tvm_bridge.tuner import TaskDef


class Budget:
    """Trials per workload and an optional deadline for the whole run (--tune-minutes)."""

    def __init__(self, trials: int, minutes: float | None = None):
        self.trials = trials
        self.deadline = time.monotonic() + minutes * 60 if minutes else math.inf

    @property
    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class Job:
    key: str  # the workload's record key in layers.json
    tasks: list[TaskDef]
    per_task: bool = False  # the trials asked are per task (a Relax block's fused PrimFuncs)

    @property
    def group(self) -> tuple:
        return (self.per_task, all(t.strategy == "enumerate" for t in self.tasks))


def enough(record: LayerRecord | None, budget: Budget) -> bool:
    """Whether a workload holds the trials asked for (or an earlier tuning with at least that
    budget ended with its space exhausted)."""
    return bool(record) and (record.trials >= budget.trials or record.asked >= budget.trials)


class Session:
    """The tuning of one run's workloads for a toolchain and database (workers kept alive)."""

    def __init__(self, db: Database, toolchain, threads: int,
                 settings: tuner.Settings = tuner.Settings()):
        self.db, self.toolchain, self.threads, self.settings = db, toolchain, threads, settings
        self._tuner = None

    def tune(self, jobs: list[Job], budget: Budget, on_progress=lambda key, trials, best: None
             ) -> set[str]:
        """Tune the jobs that lack trials, where candidates can be measured and while the budget
        lasts. Returns the keys of the jobs it tuned."""
        todo = [j for j in {j.key: j for j in jobs}.values() if not enough(self.db.record(j.key), budget)]
        if not todo or self.toolchain.measure_problem or budget.seconds_left <= 0:
            return set()
        self.db.writable()
        book = _Book(self.db, todo, on_progress)
        with _interruptible() as interrupted:
            for group in sorted({j.group for j in todo}, key=lambda g: (g[0], not g[1])):
                chosen = [j for j in todo if j.group == group]
                if interrupted or budget.seconds_left <= 0:
                    break
                self._tune_set(chosen, budget, book, interrupted)
        self.db.changed()  # the tuner appended records: reopen
        if interrupted:
            stopped(interrupted)
        if budget.seconds_left > 0:  # not cut short: this budget is done, even if a space ran out
            book.done(budget.trials)
        return {j.key for j in todo}

    def _tune_set(self, jobs: list[Job], budget: Budget, book: "_Book", interrupted: list) -> None:
        left = {j.key: max(budget.trials - book.records[j.key].trials, 1) for j in jobs}
        per_task = jobs[0].per_task
        for job in jobs:  # rounds small enough that the first round over every task fits
            for task in job.tasks:
                if task.strategy == "enumerate":
                    task.batch = max(1, min(self.settings.enum_batch, left[job.key] // len(job.tasks)))
        tasks = [t for group in itertools.zip_longest(*(j.tasks for j in jobs)) for t in group if t]
        trials = sum(left[j.key] * (len(j.tasks) if per_task else 1) for j in jobs)
        start = time.monotonic()

        def on_batch(task, seconds, batch_s):
            book.add(task, seconds, batch_s)
            return not interrupted and budget.seconds_left > 0

        try:
            self.tuner().tune(tasks, trials, on_batch, batch=min(left.values()),
                              per_task=min(left.values()) if per_task else None,
                              stop=lambda: bool(interrupted) or budget.seconds_left <= 0)
        finally:
            book.wall(jobs, time.monotonic() - start)

    def tuner(self) -> tuner.Tuner:
        if self._tuner is None:
            self._tuner = tuner.Tuner(self.toolchain, self.db.dir, self.threads, self.settings)
        return self._tuner

    def close(self) -> None:
        if self._tuner is not None:
            self._tuner.close()
            self._tuner = None


class _Book:
    """Each job's record, updated and saved after every batch of one of its tasks: trials (per
    candidate; for per-task jobs the fewest any task has had), seconds of its own batches, and
    the best-latency curve (per-task jobs: MetaSchedule's estimate, the sum over tasks of
    weight x best, once every task has one)."""

    def __init__(self, db: Database, jobs: list[Job], on_progress):
        self.db, self.on_progress = db, on_progress
        self.jobs = {j.key: j for j in jobs}
        self.records = {j.key: db.record(j.key) or LayerRecord() for j in jobs}
        self.base = {k: r.trials for k, r in self.records.items()}  # trials of earlier sessions
        self.best = {k: r.best_s for k, r in self.records.items()}
        self.tasks = {t.name: [0, math.inf] for j in jobs for t in j.tasks}  # trials, best
        for key, record in self.records.items():
            db.save(key, record)  # the fingerprint goes in before any record

    def add(self, task: TaskDef, seconds: list, batch_s: float) -> None:
        key, record = task.key, self.records[task.key]
        record.tune_s += batch_s
        done = self.tasks[task.name]
        done[0] += len(seconds)
        done[1] = min([done[1], *(s for s in seconds if s is not None)])
        job = self.jobs[key]
        for s in seconds:
            if not job.per_task:
                record.trials += 1
                self.best[key] = min(self.best[key], s) if s is not None else self.best[key]
            self._point(key, record)
        if job.per_task:
            per = [self.tasks[t.name] for t in job.tasks]
            record.trials = self.base[key] + min(p[0] for p in per)
            self.best[key] = sum(t.weight * p[1] for t, p in zip(job.tasks, per))
            self._point(key, record)
        self.db.save(key, record)
        self.on_progress(key, record.trials, self.best[key])

    def _point(self, key: str, record: LayerRecord) -> None:
        best = self.best[key]
        record.curve.append([len(record.curve) + 1, record.tune_s, best if best < math.inf else None])

    def wall(self, jobs: list[Job], seconds: float) -> None:
        for job in jobs:
            self.records[job.key].wall_s += seconds / len(jobs)
            self.db.save(job.key, self.records[job.key])

    def done(self, trials: int) -> None:
        for key, record in self.records.items():
            if record.trials > 0:
                record.asked = max(record.asked, trials)
            self.db.save(key, record)


@contextmanager
def _interruptible():
    """SIGINT, SIGTERM and SIGHUP set a flag for the duration (the tuner stops after its batch),
    and the previous handlers come back afterwards; a flagged tuning ends as that signal would
    have ended it (`stopped`)."""
    interrupted: list = []
    handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
                handlers[sig] = signal.signal(sig, lambda signum, _: interrupted.append(signum))
        except ValueError:  # not the main thread
            pass
    try:
        yield interrupted
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def stopped(interrupted: list) -> None:
    """Raise what the first signal of a flagged tuning raises outside it: KeyboardInterrupt for
    Ctrl-C, the command's own exception for SIGTERM or SIGHUP (cli/signals.py)."""
    handler = signal.getsignal(interrupted[0])
    if interrupted[0] != signal.SIGINT and callable(handler):
        handler(interrupted[0], None)
    raise KeyboardInterrupt


def curve_rows(workload, backend: str, target: str, record: LayerRecord,
               variant: str = "") -> list[dict]:
    """Rows of tuning_curves.csv (columns in results/README.md)."""
    return [{"spec_id": workload.id, "layer": workload.label, "backend": backend,
             "target": target, "trial": trial, "elapsed_s": elapsed, "best_s": best,
             "variant": variant}
            for trial, elapsed, best in record.curve if best is not None]
