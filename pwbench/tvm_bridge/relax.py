"""TVM Relax: a workload's ONNX export as a whole-graph program, compiled untuned or tuned by
MetaSchedule (apache-tvm 0.27). Running the exported library is runtime.py's job.

Untuned (`compile_untuned`): `from_onnx`, then `tvm.compile` with its default pipeline, which on
an llvm target legalizes every Relax operator into its TOPI loop nest and stops there: no
operator fusion (FuseOps is not in the CPU default pipeline), no schedule, no DLight rule (DLight
CPU has only GEMV and reduction rules, none matches a conv). Each conv, bias add, activation and
add is its own serial loop nest, one thread.

Tuned (`fuse`, `Tuner`, `compile_tuned`): MetaSchedule extracts tasks only from `call_tir`
PrimFuncs, and `from_onnx` gives high-level `R.nn.conv2d` calls, so on that module
`extract_tasks` finds nothing ("No tasks to tune"). The module is first legalized and fused
(LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR: the front of
`relax.get_pipeline("zero")`), each fused PrimFunc (e.g. conv2d + bias + ReLU6) is a task, and the
database is applied to that very fused module, whose PrimFuncs are its keys (applied before
fusion it would find none). Records live in the same kind of database as single layers (one per
target fingerprint, tvm_bridge/database.py); a fused PrimFunc's record does not depend on the
weights' values, which are its arguments.
"""

from __future__ import annotations

import math

import tvm
import tvm.ir.utils
from tvm import relax

from pwbench.tvm_bridge import compiler
from pwbench.workloads.spec import ConvSpec


def import_onnx(model: bytes, workload):
    """The Relax module of a workload's ONNX export. A block's weights become constants in the
    module (they are the block's); a conv's weight stays a parameter of `main` after the input,
    so that its kernel is called with the weight it is loaded with."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    weights_as_inputs = isinstance(workload, ConvSpec)
    mod = from_onnx(onnx.load_from_string(model), shape_dict={"x": list(workload.input_shape)},
                    dtype_dict="float32", keep_params_in_input=weights_as_inputs)
    if weights_as_inputs:
        mod, _ = relax.frontend.detach_params(mod)  # main(x, weight); the zero weight dropped
    return mod


def compile_untuned(mod, target: dict):
    return tvm.compile(mod, target=tvm.target.Target(target))


def fuse(mod, target: dict):
    """Legalized and fused: the module MetaSchedule tunes and its database is applied to."""
    passes = tvm.transform.Sequential([
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()])
    with tvm.target.Target(target), tvm.transform.PassContext(opt_level=3):
        return passes(mod)


def primfuncs(mod) -> list[tuple[str, bool]]:
    """(name, scheduled) of every PrimFunc of a module."""
    out = []
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            attrs = func.attrs or {}
            out.append((gv.name_hint, bool(attrs.get("tirx.is_scheduled", False))))
    return out


def compile_tuned(fused, target: dict, database):
    """(executable, PrimFuncs scheduled from the database, all PrimFuncs). A PrimFunc the database
    holds no record for stays an untuned loop nest (it is counted, not hidden)."""
    with tvm.target.Target(target), tvm.transform.PassContext(opt_level=3), database:
        tuned = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)
    funcs = primfuncs(tuned)
    return compile_untuned(tuned, target), sum(s for _, s in funcs), len(funcs)


def key(workload) -> str:
    """A workload's key in a tuning database's layers.json when tuned through Relax."""
    return f"relax:{workload.id}"


class Tuner:
    """What database.ensure_tuned needs to tune a block (or a conv) through Relax: its tasks
    tuned into a database directory, and the best executable compiled from a database."""

    def __init__(self, fused, target: dict, workload):
        self.fused, self.target, self.key = fused, target, key(workload)
        ms = compiler.meta_schedule()
        self.tasks = ms.relax_integration.extract_tasks(fused, tvm.target.Target(target))
        if not self.tasks:
            raise RuntimeError("MetaSchedule found no task to tune in the fused module")
        self.scheduled = self.total = 0

    @property
    def task_names(self) -> list[str]:
        return [t.task_name for t in self.tasks]

    def tune(self, work_dir, trials: int, threads: int, on_batch,
             search: compiler.SearchSettings = compiler.SearchSettings()) -> None:
        """`trials` per task (max_trials_per_task; the global budget is their sum, so MetaSchedule's
        gradient scheduler cannot starve a task). on_batch(seconds, best_s, trials) after every
        measured batch: best_s estimates the block's latency as MetaSchedule does (the sum over
        tasks of weight x best time; inf until every task has one), trials is the fewest a task
        has had; it returns False to stop every task."""
        ms = compiler.meta_schedule()
        compiler.quiet_tuning_logs()
        batch = min(search.batch, trials)
        # at most 16 candidates scored by the cost model per one measured: 512 for batches of 32,
        # and a search of seconds, not minutes, for a budget of a few trials (the tests')
        population = min(search.population, 16 * batch)
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            self.tasks, str(work_dir),
            strategy=ms.search_strategy.EvolutionarySearch(population_size=population,
                                                           genetic_num_iters=search.genetic_iters),
            num_threads=threads, seed=0)
        best, done = [math.inf] * len(contexts), [0] * len(contexts)
        stopper = compiler.Stopper()  # stops every task (another task's batch in flight is lost)

        def on_task_batch(task_id, seconds):
            done[task_id] += len(seconds)
            best[task_id] = min([best[task_id], *(s for s in seconds if s is not None)])
            estimate = sum(w * b for w, b in zip(weights, best))
            if not on_batch(seconds, estimate, min(done)):
                stopper.stop()

        stopper.run(ms.tune_tasks, tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                      max_trials_global=trials * len(contexts), max_trials_per_task=trials,
                      num_trials_per_iter=batch,
                      builder=compiler.local_builder(self.target),
                      runner=compiler.local_runner(search, self.target),
                      cost_model="xgb",
                      measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                         _task_callback(ms, on_task_batch)])

    def best(self, db):
        """The executable compiled with the database's records, or None when it holds none."""
        executable, self.scheduled, self.total = compile_tuned(self.fused, self.target, db.open_tvm())
        return executable if self.scheduled else None


def _task_callback(ms, on_task_batch):
    @tvm.ir.utils.derived_object
    class TaskCallback(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, candidates, builder_results, runner_results):
            on_task_batch(task_id, compiler.batch_seconds(runner_results))

    return TaskCallback()

