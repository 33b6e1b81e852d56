"""MetaSchedule tuning of a task set: one layer's tasks (layer at a time) or a whole suite's as
one set (`ms.tune_tasks`: the gradient task scheduler spends a shared trial budget where the
latency falls fastest, one cost model learns from every layer), with the builder and runner
workers started once and kept alive across batches and layers.

Why keep the workers. MetaSchedule's LocalBuilder starts a fresh process pool for every batch
(a guard against a memory leak of long-lived workers); each worker then imports TVM and
registers its intrinsics again, seconds per batch on 2 cores, which is most of a small batch's
time. `KeptBuilder` keeps one pool for the whole tuning session and recycles each worker after
RECYCLE_AFTER builds, which bounds the leak the stock builder guards against. The LocalRunner's
one worker is already kept for as long as the runner object lives: `Tuner` keeps it (and the
builder) across every task set it tunes.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import tvm
import tvm.ir.utils

from pwbench.tvm_bridge import compiler

RECYCLE_AFTER = 64  # builds per builder worker before it is replaced


@dataclass(frozen=True)
class Settings:
    """The search knobs of a tuning session (chosen with scripts/suite_tuning.py; see README)."""
    batch: int = 32  # default space: candidates per task and round (num_trials_per_iter)
    population: int = 512  # default space: evolutionary search population
    genetic_iters: int = 4  # default space: evolutionary search iterations
    enum_batch: int = 4  # structured spaces: candidates per task and round
    model_warmup: int = 32  # measured candidates before the cost model ranks them
    cost_model: str = "none"  # structured spaces: "xgb" or "none" (the prior order; see tune)
    min_repeat_ms: int = 50  # each candidate: 3 calls, repeated until this long
    cache_flush: bool = False
    builder: str = "here"  # "here": in this process; "pool": worker processes (tuning.pool_builder)


@dataclass
class TaskDef:
    """One MetaSchedule task: the PrimFunc (as its workload module) and its space generator."""
    key: str  # whose trials these are (the caller's layer key)
    name: str  # task name (its log file)
    mod: object  # tvm.IRModule({"main": func})
    space: object  # a space generator, or "post-order-apply" (MetaSchedule's default space)
    strategy: str = "evolutionary"  # or "enumerate" (tuning.enumeration: small spaces)
    weight: float = 1.0  # how much the task's latency counts (the layer's count in its network)
    batch: int = 0  # enumerate: candidates per round (0: Settings.enum_batch)


class Tuner:
    """A tuning session for one target and database directory: workers started on first use and
    kept until `close`."""

    def __init__(self, target: dict, work_dir, threads: int, settings: Settings = Settings()):
        self.target, self.work_dir, self.threads, self.settings = target, str(work_dir), threads, settings
        self.ms = compiler.meta_schedule()
        self._builder = self._runner = None
        self.startup_s = 0.0  # seconds spent starting workers (not attributed to any layer)

    def _workers(self):
        if self._builder is None:
            start = time.monotonic()
            self._builder = (pool_builder(self.ms, self.threads) if self.settings.builder == "pool"
                             else here_builder(self.ms))
            self._runner = timed_runner(self.ms, self.ms.runner.LocalRunner(
                timeout_sec=60, evaluator_config=self.ms.runner.EvaluatorConfig(
                    number=3, repeat=1, min_repeat_ms=self.settings.min_repeat_ms,
                    enable_cpu_cache_flush=self.settings.cache_flush)))
            self.startup_s += time.monotonic() - start
        return self._builder, self._runner

    def tune(self, tasks: list[TaskDef], trials: int, on_batch, seed: int = 0,
             batch: int | None = None, stop=lambda: False) -> None:
        """Tune the task set for `trials` trials in all into the JSON database in work_dir
        (records are appended as measured); `batch`: the trials each layer has (rounds and the
        evolutionary population are sized to it). on_batch(key, seconds, batch_s) after each batch:
        the measured seconds (None for a failed candidate) and the seconds its candidates took
        to build and run; it returns False to stop the task set. stop() is asked before every
        round of an enumerated task (a deadline: the task scheduler's first round over every
        task happens before any on_batch)."""
        ms, s = self.ms, self.settings
        per_layer = batch or s.batch  # the trials each layer has: rounds no larger than that
        batch = min(per_layer, s.batch)  # evolutionary tasks' round (enumerate: TaskDef.batch)
        # a population far above what can be measured is search time spent on nothing:
        # 8 per trial of a layer, MetaSchedule's 512 from 64 trials on
        population = min(s.population, max(64, 8 * per_layer))
        builder, runner = self._workers()
        os.makedirs(self.work_dir, exist_ok=True)
        database = compiler.open_database(self.work_dir)
        names = [t.name for t in tasks]
        for handler in logging.getLogger("tvm.s_tir.meta_schedule").handlers:
            if handler.get_name() is None:  # MetaSchedule formats every handler's name
                handler.set_name(f"pwbench.handler{id(handler)}")
        loggers = ms.logging.get_loggers_from_work_dir(self.work_dir, names)
        _quiet()
        # XGBoost learns for the default space's evolutionary search. A set of structured spaces
        # only gets it when asked (cost_model="xgb"): they are small enough to be enumerated whole
        # at 64 trials per layer, and a first-look budget goes to the task scheduler's first round
        # robin, so the model would rank nothing while its training took half the tuning time
        # (2 cores: 45 of 90 s for 72 trials).
        if s.cost_model == "xgb" or any(t.strategy != "enumerate" for t in tasks):
            model = ms.cost_model.XGBModel(num_tuning_cores=self.threads,
                                           num_warmup_samples=s.model_warmup)
        else:
            model = ms.cost_model.RandomModel()

        def strategy(task: TaskDef):
            if task.strategy == "enumerate":
                return enumeration(ms, model, task.batch or s.enum_batch,
                                   lambda: stopped or stop())
            return ms.search_strategy.EvolutionarySearch(population_size=population,
                                                         genetic_num_iters=s.genetic_iters)

        contexts = [ms.TuneContext(mod=t.mod, target=tvm.target.Target(self.target),
                                   space_generator=t.space, search_strategy=strategy(t),
                                   task_name=t.name, rand_state=r, num_threads=self.threads,
                                   logger=log).clone()
                    for t, r, log in zip(tasks, ms.utils.fork_seed(seed, n=len(tasks)), loggers)]
        stopped = []
        callback = _batch_callback(ms, tasks, on_batch, builder, runner, stopped)
        ms.tune_tasks(tasks=contexts, task_weights=[t.weight for t in tasks],
                      work_dir=self.work_dir, max_trials_global=trials,
                      num_trials_per_iter=batch, builder=builder, runner=runner,
                      database=database, cost_model=model,
                      measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                         callback], task_scheduler="gradient")
        _quiet()

    def close(self) -> None:
        if self._builder is not None:
            self._builder.close()
        self._builder = self._runner = None


def here_builder(ms):
    """Builds candidates in this process, one after the other, and exports each as a library
    for the runner's worker. TVM's compiler holds the GIL, so threads would not build in
    parallel; a process pool would, but each of its builds also pays for shipping the module to
    the worker and back (on 2 loaded cores: 0.46 s per candidate with 2 pool workers and 20-45 s
    to start them, 0.22 s per candidate here). No build timeout here: a structured candidate
    compiles in about 0.1 s."""
    import tempfile

    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    @tvm.ir.utils.derived_object
    class HereBuilder(ms.builder.PyBuilder):
        def __init__(self):
            super().__init__()
            self.dir = tempfile.mkdtemp(prefix="pwbench-tuning-")
            self.count, self.seconds = 0, 0.0  # candidates built, seconds spent building
            self.times = {}  # artifact path -> seconds its build took

        def build(self, build_inputs):
            results = []
            for b in build_inputs:
                start = time.monotonic()
                self.count += 1
                # one directory each: RemoveBuildArtifact deletes the artifact's directory
                path = os.path.join(tempfile.mkdtemp(dir=self.dir), "candidate.so")
                try:
                    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(b.mod)
                    tvm.compile(mod, target=b.target).export_library(path)  # as default_build
                    results.append(ms.builder.BuilderResult(path, None))
                except Exception as exc:  # a candidate that does not compile is a failed trial
                    results.append(ms.builder.BuilderResult(None, compiler.error_line(exc)))
                self.times[path] = time.monotonic() - start
                self.seconds += self.times[path]
            return results

        def close(self) -> None:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)

    return HereBuilder()


def pool_builder(ms, workers: int):
    """LocalBuilder's build with one process pool for the session (see the module docstring)."""
    from tvm.s_tir.meta_schedule.builder import local_builder
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @tvm.ir.utils.derived_object
    class PoolBuilder(ms.builder.PyBuilder):
        def __init__(self):
            super().__init__()
            self.pool = PopenPoolExecutor(max_workers=workers, timeout=60,
                                          initializer=compiler.x86_intrinsics_only,
                                          maximum_process_uses=RECYCLE_AFTER)
            self.count, self.seconds = 0, 0.0  # the workers' start is in the first build
            self.times = {}  # artifact path -> its share of the batch's build seconds

        def build(self, build_inputs):
            start, results = time.monotonic(), []
            args = [(None, None, b.mod, b.target, None) for b in build_inputs]
            for r in self.pool.map_with_error_catching(lambda a: local_builder._worker_func(*a), args):
                if r.status == StatusKind.COMPLETE:
                    results.append(ms.builder.BuilderResult(r.value, None))
                elif r.status == StatusKind.TIMEOUT:
                    results.append(ms.builder.BuilderResult(None, "PoolBuilder: timeout (60 s)"))
                else:
                    results.append(ms.builder.BuilderResult(None, f"PoolBuilder: {r.value}"))
            self.count += len(build_inputs)
            spent = time.monotonic() - start
            self.seconds += spent
            self.times |= {r.artifact_path: spent / len(results) for r in results}
            return results

        def close(self) -> None:
            self.pool.shutdown()

    return PoolBuilder()


def timed_runner(ms, runner):
    """The runner, one candidate at a time, with the seconds each took (loading, measuring)."""

    @tvm.ir.utils.derived_object
    class TimedRunner(ms.runner.PyRunner):
        def __init__(self):
            super().__init__()
            self.inner, self.times, self.seconds = runner, {}, 0.0

        def run(self, runner_inputs):
            futures = []
            for one in runner_inputs:
                start = time.monotonic()
                (future,) = self.inner.run([one])
                future.result()  # the LocalRunner has run it already; this only fetches it
                self.times[str(one.artifact_path)] = time.monotonic() - start
                self.seconds += self.times[str(one.artifact_path)]
                futures.append(future)
            return futures

    return TimedRunner()


def _batch_callback(ms, tasks: list[TaskDef], on_batch, builder, runner, stopped: list):
    """Calls on_batch with each batch's results and the seconds its candidates took to build
    and run. (The wall time between callbacks would not do: the task scheduler builds and runs
    its first round over every task before it reports any of them.)"""

    @tvm.ir.utils.derived_object
    class BatchCallback(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, candidates, builder_results, runner_results):
            seconds = [float(np.mean([float(s) for s in r.run_secs]))
                       if r.error_msg is None and r.run_secs else None for r in runner_results]
            paths = [str(b.artifact_path) for b in builder_results]
            spent = sum(builder.times.pop(p, 0.0) + runner.times.pop(p, 0.0) for p in paths)
            if not on_batch(tasks[task_id].key, seconds, spent):
                stopped.append(True)  # enumerated tasks end at their next round (stop())
                if not task_scheduler.tasks_[task_id].is_terminated:
                    task_scheduler.terminate_task(task_id)

    return BatchCallback()


def _quiet() -> None:
    """MetaSchedule logs every batch at INFO to stdout; pwbench shows its own progress."""
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    os.environ.setdefault("TVM_LOG_DEBUG", "0")


UNMEASURED_S = 1e9  # MetaSchedule keeps a candidate whose run failed with run_secs = 1e10


def best(database, mods: list) -> tuple[int, object, float] | None:
    """(index of the module, its best schedule, its measured seconds) over several tasks' modules
    (the alternatives of one layer), or None when the database measured none of them."""
    found = []
    for i, mod in enumerate(mods):
        if not database.has_workload(mod):
            continue
        for record in database.get_top_k(database.commit_workload(mod), 4):
            seconds = [float(s) for s in record.run_secs or []]
            if seconds and max(seconds) < UNMEASURED_S:
                found.append((float(np.mean(seconds)), i, record.trace))
                break
    if not found:
        return None
    seconds, i, trace = min(found, key=lambda f: f[0])
    schedule = tvm.s_tir.Schedule(mods[i])
    trace.apply_to_schedule(schedule, remove_postproc=False)
    return i, schedule, seconds


MAX_POINTS = 1024  # an enumerated space larger than this is cut (the structured spaces: < 100)


def enumeration(ms, model, batch: int, stop=lambda: False):
    """A search strategy for small spaces whose only decisions are sample_categorical (the
    structured spaces): every point of every design space, unmeasured ones only, measured in the
    order the cost model ranks them once it has learnt (`model`: the session's XGBModel, shared
    by every task of a suite); before that, a prior: one point of each design space in turn, the
    widest register tile first. Returns None (the task is done) when the space is exhausted.

    Why not the evolutionary search: on a space of 8-30 points it spends seconds per batch
    mutating and re-sampling points it has already measured (on 2 cores, 2.5 s for each of many
    empty batches), and never says it is done."""
    from tvm.ir.utils import derived_object

    @derived_object
    class Enumerate(ms.search_strategy.PySearchStrategy):
        def _initialize_with_tune_context(self, context) -> None:
            self.context = context

        def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None,
                       cost_model=None) -> None:
            mod = self.context.mod
            self.left, self.cost_model = max_trials, cost_model
            self.args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
            measured = set()
            if database is not None and database.has_workload(mod):
                for record in database.get_top_k(database.commit_workload(mod), MAX_POINTS):
                    measured.add(_key(_replay(mod, record.trace)))
            points = []
            for space in design_spaces:
                points.append([p for p in _points(mod, space.trace) if _key(p) not in measured])
            # the prior: interleave the design spaces, each from its widest tile
            self.todo = [p for group in itertools.zip_longest(*points) for p in group if p is not None]

        def post_tuning(self) -> None:
            self.todo = []

        def generate_measure_candidates(self):
            n = min(batch, self.left, len(self.todo))
            if n <= 0 or stop():
                return None
            if _trained(model):
                candidates = [ms.search_strategy.MeasureCandidate(s, self.args) for s in self.todo]
                scores = np.asarray(self.cost_model.predict(self.context, candidates))
                order = np.argsort(-scores, kind="stable")
                self.todo = [self.todo[i] for i in order]
            chosen, self.todo = self.todo[:n], self.todo[n:]
            self.left -= n
            return [ms.search_strategy.MeasureCandidate(s, self.args) for s in chosen]

        def notify_runner_results(self, measure_candidates, results) -> None:
            pass

        def clone(self):
            return Enumerate()

    return Enumerate()


def _trained(model) -> bool:
    return (getattr(model, "booster", None) is not None
            and model.data_size >= model.num_warmup_samples)


def _points(mod, trace) -> list:
    """Every schedule a trace gives over its sample_categorical decisions (last choice first)."""
    insts = [i for i in trace.insts if i.kind.name == "SampleCategorical"]
    ranges = [range(len(i.attrs[0]) - 1, -1, -1) for i in insts]
    out = []
    for decisions in itertools.islice(itertools.product(*ranges), MAX_POINTS):
        t = trace
        for inst, d in zip(insts, decisions):
            t = t.with_decision(inst, d, remove_postproc=True)
        out.append(_replay(mod, t))
    return out


def _replay(mod, trace):
    schedule = tvm.s_tir.Schedule(mod)
    trace.apply_to_schedule(schedule, remove_postproc=True)
    return schedule


def _key(schedule) -> int:
    import tvm_ffi

    return tvm_ffi.structural_hash(schedule.mod)


def time_schedule(schedule, target: dict, repeat: int = 10, min_repeat_ms: int = 20) -> float:
    """The fastest of `repeat` time_evaluator samples of a schedule compiled for the target, on
    random arguments (for comparing tuning settings by the kernel they find)."""
    ex = tvm.compile(schedule.mod, target=tvm.target.Target(target))
    dev = tvm.cpu()
    args = [tvm.runtime.tensor(np.random.rand(*[int(d) for d in p.shape]).astype(str(p.dtype)), dev)
            for p in schedule.mod["main"].params]
    timer = ex.mod.time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
    return float(min(timer(*args).results))
