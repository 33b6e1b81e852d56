"""TVM tuned by MetaSchedule for this target, through a reusable tuning database
(pwbench/tvm_bridge/database.py): layers the database already holds are compiled from it, not tuned again.
Every kernel, tuned now or taken from the database, is verified by the runner before timing."""

from __future__ import annotations

from pwbench.tvm_bridge import compiler, database
from pwbench.workloads.spec import ConvSpec
from pwbench.targets import Target

_state: dict = {}
# console sets this to show tuning progress: (spec, trials_done, trials_asked, best_s)
on_progress = None


def versions() -> dict:
    info = compiler.versions()
    if _state:
        info |= {"tvm_target": _state["db"].fingerprint["target_string"],
                 "tuning_database": str(_state["db"].dir)}
    return info


def configure(config, target: Target) -> None:
    """Open (and check) the tuning database before the first layer: a corrupted or foreign
    database stops the run with one clear line."""
    tvm_target = compiler.target_dict(target, config.threads)
    _state.update(db=database.Database(config.tuning_dir, tvm_target), threads=config.threads,
                  budget=database.Budget(config.trials, config.tune_minutes))


def set_threads(threads: int) -> None:
    compiler.set_threads(threads)


def prepare(spec: ConvSpec, target: Target):
    if not _state:
        raise RuntimeError("tvm-tuned used before configure()")
    db, budget = _state["db"], _state["budget"]

    def progress(trials, best_s):
        if on_progress:
            on_progress(spec, trials, budget.trials, best_s)

    outcome = database.ensure_tuned(spec, db, budget, _state["threads"], progress)
    kernel = compiler.compile_scheduled(spec, db.target, outcome.schedule)
    kernel.columns = {"target_string": kernel.target_string, "tuning": outcome.source,
                      "tuning_trials": outcome.record.trials, "tuning_s": outcome.record.tune_s}
    kernel.tuning_record = outcome.record
    return kernel
