"""The one MetaSchedule tuner: a task set, a database directory, and the builder and runner the
target's toolchain provides (toolchains.py: this CPU, the boards behind an RPC tracker, a GPU
with nvcc). Single layers in either design space, a whole suite's layers at once and the fused
PrimFuncs of a Relax block all go through `Tuner.tune` (`ms.tune_tasks`: the gradient task
scheduler spends a shared trial budget where the latency falls fastest, one cost model learns
from every task).

Why one builder that builds here. MetaSchedule's LocalBuilder starts a fresh process pool for
every batch; each worker then imports TVM and registers its intrinsics again, seconds per batch
on 2 cores, most of a small batch's time. TVM's compiler holds the GIL, so threads would not
build in parallel; a pool would, but each of its builds also pays for shipping the module to the
worker and back (0.46 s per candidate with 2 pool workers and 20-45 s to start them, against
0.22 s per candidate here). A structured candidate compiles in about 0.1 s. The runner (a local
worker, one per board, or the GPU) is started once and kept for the whole session.

Stopping. The measure callback asks `on_batch` after every measured batch; when it answers False
(the budget is spent, or Ctrl-C was pressed) the callback raises, which ends `tune_tasks` at
once: the batch is already in the database (the default callbacks, AddToDatabase first, run
before ours). MetaSchedule's own terminate_task fails its check when the task being joined is
the one its scheduler terminates next, so it is not used.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import tvm
import tvm.ir.utils

from pwbench.tvm_bridge import metaschedule, search
from pwbench.tvm_bridge.tvm_targets import error_line

UNMEASURED_S = 1e9  # MetaSchedule keeps a candidate whose run failed with run_secs = 1e10


@dataclass(frozen=True)
class Settings:
    """The search knobs of a tuning session (chosen with scripts/suite_tuning.py; see README)."""
    batch: int = 32  # default space: candidates per task and round (num_trials_per_iter)
    population: int = 512  # default space: evolutionary search population (capped: see tune)
    genetic_iters: int = 4  # default space: evolutionary search iterations
    enum_batch: int = 4  # structured spaces: candidates per task and round
    model_warmup: int = 32  # measured candidates before the cost model ranks them
    cost_model: str = "none"  # structured spaces: "xgb" or "none" (the prior order; see tune)
    min_repeat_ms: int = 50  # each candidate: 3 calls, repeated until this long
    cache_flush: bool = False


@dataclass
class TaskDef:
    """One MetaSchedule task: the PrimFunc (as its workload module) and its space generator."""
    key: str  # whose trials these are (the caller's record key)
    name: str  # task name (its log file)
    mod: object  # tvm.IRModule({"main": func})
    space: object  # "post-order-apply" (MetaSchedule's default space), or ms -> a space generator
    strategy: str = "evolutionary"  # or "enumerate" (search.enumeration: small spaces)
    weight: float = 1.0  # how much the task's latency counts (the layer's count in its network)
    batch: int = 0  # enumerate: candidates per round (0: Settings.enum_batch)
    first: object = None  # enumerate: schedule -> bool, the points measured before any other


class Stopped(Exception):
    """Raised from the measure callback to end a tuning (see the module docstring)."""


class Tuner:
    """A tuning session for one toolchain and database directory: workers started on first use
    and kept until `close`."""

    def __init__(self, toolchain, work_dir, threads: int, settings: Settings = Settings()):
        self.toolchain, self.work_dir, self.threads = toolchain, str(work_dir), threads
        self.settings = settings
        self.ms = metaschedule.meta_schedule(*toolchain.intrinsics)
        self._builder = self._runner = None
        self.startup_s = 0.0  # seconds spent starting workers (not attributed to any layer)

    def _workers(self):
        if self._builder is None:
            start = time.monotonic()
            evaluator = self.ms.runner.EvaluatorConfig(
                number=3, repeat=1, min_repeat_ms=self.settings.min_repeat_ms,
                enable_cpu_cache_flush=self.settings.cache_flush and self.toolchain.device == "cpu")
            with sigint_ignored():  # Ctrl-C is the session's to handle, not its workers' to die of
                runner = self.toolchain.runner(self.ms, evaluator, self.threads)
            self._builder = here_builder(self.ms, self.toolchain)
            self._runner = timed_runner(self.ms, runner)
            self.startup_s += time.monotonic() - start
        return self._builder, self._runner

    def tune(self, tasks: list[TaskDef], trials: int, on_batch, *, seed: int = 0,
             batch: int | None = None, per_task: int | None = None, stop=lambda: False) -> bool:
        """Tune the task set for `trials` trials in all (at most `per_task` each) into the JSON
        database in work_dir, records appended as measured; `batch`: the trials each workload has
        (rounds and the evolutionary population are sized to it). on_batch(task, seconds, batch_s)
        after each batch: the measured seconds (None for a failed candidate) and the seconds its
        candidates took to build and run; it returns False to stop. stop() is also asked before
        every round of an enumerated task. Returns whether it was stopped."""
        ms, s = self.ms, self.settings
        per_workload = batch or s.batch
        builder, runner = self._workers()
        os.makedirs(self.work_dir, exist_ok=True)
        database = metaschedule.open_database(self.work_dir)
        metaschedule.quiet_logs()
        loggers = ms.logging.get_loggers_from_work_dir(self.work_dir, [t.name for t in tasks])
        metaschedule.quiet_logs()  # get_loggers_from_work_dir set the level to DEBUG again
        model = self._cost_model(tasks)
        stopped = []
        contexts = [ms.TuneContext(mod=t.mod, target=tvm.target.Target(self.toolchain.target),
                                   space_generator=t.space(ms) if callable(t.space) else t.space,
                                   num_threads=self.threads, logger=log,
                                   search_strategy=self._strategy(t, model, per_workload,
                                                                  lambda: bool(stopped) or stop()),
                                   task_name=t.name, rand_state=r).clone()
                    for t, r, log in zip(tasks, ms.utils.fork_seed(seed, n=len(tasks)), loggers)]
        callback = _batch_callback(ms, tasks, on_batch, builder, runner, stopped)
        try:
            ms.tune_tasks(tasks=contexts, task_weights=[t.weight for t in tasks],
                          work_dir=self.work_dir, max_trials_global=trials,
                          max_trials_per_task=per_task, num_trials_per_iter=min(per_workload, s.batch),
                          builder=builder, runner=runner, database=database, cost_model=model,
                          measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                             callback], task_scheduler="gradient")
        except Exception:  # the stop crosses TVM's FFI as a RuntimeError: only it is swallowed
            if not stopped:
                raise
        metaschedule.quiet_logs()
        return bool(stopped)

    def _cost_model(self, tasks: list[TaskDef]):
        """XGBoost for an evolutionary search. A set of structured spaces only gets it when
        asked (cost_model="xgb"): they are small enough to be enumerated whole at 64 trials per
        layer, and a first-look budget goes to the task scheduler's first round robin, so the
        model would rank nothing while its training took half the tuning time (2 cores: 45 of
        90 s for 72 trials)."""
        if self.settings.cost_model == "xgb" or any(t.strategy != "enumerate" for t in tasks):
            return self.ms.cost_model.XGBModel(num_tuning_cores=self.threads,
                                               num_warmup_samples=self.settings.model_warmup)
        return self.ms.cost_model.RandomModel()

    def _strategy(self, task: TaskDef, model, per_workload: int, stop):
        if task.strategy == "enumerate":
            return search.enumeration(self.ms, model, task.batch or self.settings.enum_batch, stop,
                                      task.first)
        # a population far above what can be measured is search time spent on nothing:
        # 8 per trial of a workload, MetaSchedule's 512 from 64 trials on
        population = min(self.settings.population, max(64, 8 * per_workload))
        return self.ms.search_strategy.EvolutionarySearch(
            population_size=population, genetic_num_iters=self.settings.genetic_iters)

    def close(self) -> None:
        if self._builder is not None:
            self._builder.close()
        self._builder = self._runner = None


@contextmanager
def sigint_ignored():
    """Processes started inside inherit SIGINT ignored (Python keeps an inherited SIG_IGN), so a
    Ctrl-C at the terminal, sent to the whole process group, leaves the tuner's workers alive
    and the main process decides what happens."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to protect
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def here_builder(ms, toolchain):
    """Builds candidates in this process with the toolchain, one after the other, and exports
    each as a library its runner loads (see the module docstring)."""
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    @tvm.ir.utils.derived_object
    class HereBuilder(ms.builder.PyBuilder):
        def __init__(self):
            super().__init__()
            self.dir = tempfile.mkdtemp(prefix="pwbench-tuning-")
            self.times = {}  # artifact path -> seconds its build took

        def build(self, build_inputs):
            results = []
            for b in build_inputs:
                start = time.monotonic()
                # one directory each: RemoveBuildArtifact deletes the artifact's directory
                path = os.path.join(tempfile.mkdtemp(dir=self.dir), "candidate.so")
                try:
                    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(b.mod)
                    toolchain.export(toolchain.compile_candidate(mod), path)
                    results.append(ms.builder.BuilderResult(path, None))
                except Exception as exc:  # a candidate that does not compile is a failed trial
                    results.append(ms.builder.BuilderResult(None, error_line(exc)))
                self.times[path] = time.monotonic() - start
            return results

        def close(self) -> None:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)

    return HereBuilder()


def timed_runner(ms, runner):
    """The runner, one candidate at a time, with the seconds each took (loading, measuring)."""

    @tvm.ir.utils.derived_object
    class TimedRunner(ms.runner.PyRunner):
        def __init__(self):
            super().__init__()
            self.inner, self.times = runner, {}

        def run(self, runner_inputs):
            futures = []
            for one in runner_inputs:
                start = time.monotonic()
                (future,) = self.inner.run([one])
                future.result()  # the runner has run it already; this only fetches it
                self.times[str(one.artifact_path)] = time.monotonic() - start
                futures.append(future)
            return futures

    return TimedRunner()


def batch_seconds(runner_results) -> list:
    """Measured seconds of each candidate of a batch (mean of its repeats), None for a failure."""
    return [float(np.mean([float(s) for s in r.run_secs]))
            if r.error_msg is None and r.run_secs else None for r in runner_results]


def _batch_callback(ms, tasks: list[TaskDef], on_batch, builder, runner, stopped: list):
    """Calls on_batch with each batch's results and the seconds its candidates took to build
    and run (the wall time between callbacks would not do: the task scheduler builds and runs its
    first round over every task before it reports any of them); raises Stopped when it says so."""

    @tvm.ir.utils.derived_object
    class BatchCallback(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, candidates, builder_results, runner_results):
            paths = [str(b.artifact_path) for b in builder_results]
            spent = sum(builder.times.pop(p, 0.0) + runner.times.pop(p, 0.0) for p in paths)
            if not on_batch(tasks[task_id], batch_seconds(runner_results), spent):
                stopped.append(True)
                raise Stopped("pwbench stops this tuning (budget spent or interrupted)")

    return BatchCallback()


def best(database, mods: list) -> tuple[int, object, float] | None:
    """(index of the module, its best schedule, its measured seconds) over several tasks' modules
    (the alternatives of one layer), or None when the database measured none of them. Records
    whose run failed (kept with run_secs = 1e10, e.g. candidates of a tuning that could not run
    them) are skipped."""
    found = []
    for i, mod in enumerate(mods):
        if not database.has_workload(mod):
            continue
        for record in database.get_top_k(database.commit_workload(mod), 16):
            seconds = [float(s) for s in record.run_secs or []]
            if seconds and max(seconds) < UNMEASURED_S:
                found.append((float(np.mean(seconds)), i, record.trace))
                break
    if not found:
        return None
    seconds, i, trace = min(found, key=lambda f: f[0])
    return i, replay(mods[i], trace, remove_postproc=False), seconds


def replay(mod, trace, remove_postproc: bool = True):
    """A schedule of `mod` from a trace. A candidate point (search.py) is replayed without its
    postprocessors, as MetaSchedule mutates them; a stored best keeps them (what was measured)."""
    schedule = tvm.s_tir.Schedule(mod)
    trace.apply_to_schedule(schedule, remove_postproc=remove_postproc)
    return schedule
