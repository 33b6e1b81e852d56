"""TVM tuned by MetaSchedule for this target, through a reusable tuning database
(pwbench/tvm_bridge/database.py): layers the database already holds are compiled from it, not
tuned again. Every kernel, tuned now or taken from the database, is verified before timing. The
same path serves every target: the target's toolchain builds, loads and measures (this CPU, a
board behind an RPC tracker, the instruction clock, a GPU).

Design spaces (`--space`, tvm_bridge/spaces): `structured` (default on CPU targets, at the
target's vector width), the NCHW[x]c register-tile structure whose knobs MetaSchedule draws; a
layer it does not claim (grouped, dilated, a depthwise multiplier, not float32) or a GPU's falls
back to `default`, MetaSchedule's own space over TOPI's compute, and its row says so (variant
`default`, column `space_note`). Asking for both shows what the structure buys.

Tuning (`--tuning`): `suite` (default) tunes every layer of the run that lacks trials as one
task set before the first kernel is built (`prepare`); `layer` tunes each layer when it is built.

Variants, one row each: the space (`structured` or `default`, in and out in the layer's layout:
NCHW or NHWC, conversions inside the kernel and so inside the timed call) and, for a structured
NCHW layer, `structured-blocked`: the same knobs on NCHW[ic_bn]c in and NCHW[oc_bn]c out, blocked
end to end as if every layer of the network used the layout (converted when loaded, not timed).
"""

from __future__ import annotations

import math

from pwbench.backends.base import Built, NoEvents, Options
from pwbench.backends.tuning_options import TuningOptions
from pwbench.backends.tvm_backend import exported, single_convs_only
from pwbench.errors import UserError
from pwbench.tvm_bridge import layers, tuning, warm
from pwbench.tvm_bridge.database import Database
from pwbench.units import format_seconds
from pwbench.workloads.spec import ConvSpec

BLOCKED = "structured-blocked"


class Backend:
    name = "tvm-tuned"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        """Opens (and checks) the tuning database before the first layer: a corrupted or foreign
        database stops the run with one clear line."""
        self.options, self.events, self.target_name = options, events, target.name
        self.tuning = options.of(TuningOptions)
        problem = self.tuning.check()
        if problem:
            raise UserError(problem)
        self.toolchain = target.toolchain(options.threads)
        self.db = Database(self.tuning.tuning_dir, self.toolchain.target, target.tuning_facts())
        self.session = tuning.Session(self.db, self.toolchain, options.threads)
        self.budget = tuning.Budget(self.tuning.trials, self.tuning.tune_minutes)
        self.tuned_now: set[str] = set()  # record keys tuned in this run
        self.warm = warm.knobs(self.toolchain.target) if self.toolchain.structured else {}

    def versions(self) -> dict:
        return self.toolchain.versions() | {"tuning_database": str(self.db.dir)}

    def plans(self, spec: ConvSpec) -> list:
        """The layer's plan per asked space (a fallback that is the default space asked too
        counts once)."""
        found = {}
        for space in self.tuning.spaces:
            plan = layers.plan(spec, self.toolchain, space)
            found.setdefault(plan.space, plan)
        return list(found.values())

    def records(self, workload) -> list[tuple[str, str]]:
        """(space, record key) of a workload's entries in the database (none for a block)."""
        if not isinstance(workload, ConvSpec):
            return []
        return [(p.space + (" (fallback)" if p.reason else ""), layers.record_key(workload, p.space))
                for p in self.plans(workload)]

    def tune(self, workloads: list, on_progress=None) -> set[str]:
        """Every single conv that lacks trials, tuned now as one task set (per kind of search)."""
        specs = [w for w in workloads if isinstance(w, ConvSpec)]
        jobs = [layers.job(spec, plan, self.warm.get(spec.id, "")) for spec in specs
                for plan in self.plans(spec)]
        done = self.session.tune(jobs, self.budget, on_progress or self._progress(len(specs)))
        self.tuned_now |= done
        return done

    def _progress(self, count: int):
        def progress(key, trials, best_s):
            best = format_seconds(best_s if best_s < math.inf else math.nan)
            self.events.progress(f"tuning {count} layer(s): {key.split('_')[1]} at {trials} "
                                 f"trials, best {best}")
        return progress

    def prepare(self, workloads) -> None:
        """Suite-wide tuning: every single conv of the run as one task set."""
        if self.tuning.tuning_mode != "suite":
            return
        self.budget = tuning.Budget(self.tuning.trials, self.tuning.tune_minutes)  # from now
        try:
            self.tune(workloads)
        finally:
            self.session.close()

    def build(self, spec: ConvSpec) -> Built | list[Built]:
        single_convs_only(spec, self.name)
        if self.tuning.tuning_mode == "layer":
            self.tune([spec])
        built = []
        for plan in self.plans(spec):
            key = layers.record_key(spec, plan.space)
            if self.db.record(key) is None and plan.space == "default":
                _untuned_problem(self.db, self.toolchain, self.budget)
            outcome = layers.best(spec, self.db, plan, "tuned" if key in self.tuned_now else "database")
            built.append(self._built(outcome))
            if self.tuning.blocked and outcome.task is not None and spec.layout == "NCHW":
                built.append(self._blocked(outcome))
        return built[0] if len(built) == 1 else built

    # ---- kernels ----------------------------------------------------------------------------
    def _built(self, outcome: layers.Outcome) -> Built:
        spec, plan, record = outcome.spec, outcome.plan, outcome.record
        columns = self._tuning_columns(outcome) | {"space": plan.space, "space_note": plan.reason,
                                                   "tvm_layout": outcome.layout.name}
        if self.db.fingerprint.get("gpu"):
            columns["tuned_for_gpu"] = self.db.fingerprint["gpu"]
        if outcome.task is not None:
            columns["knobs"] = layers.knobs_text(outcome.task, outcome.schedule)
            columns["warm_start"] = _warm_start(self.warm.get(spec.id), columns["knobs"])
        notes = [self._note(outcome)] + ([f"{plan.reason}: tuned in the default space"]
                                         if plan.reason else [])
        if columns.get("warm_start"):
            notes.append(f"warm start ({warm.isa(self.toolchain.target)} table): "
                         f"{columns['warm_start']}")
        compiled = self.toolchain.compile(outcome.schedule.mod)
        return exported(self.toolchain, spec, compiled, outcome.layout, self.options,
                        f"{self.name}_{plan.space}", columns, variant=plan.space, notes=notes,
                        curve=tuning.curve_rows(spec, self.name, self.target_name, record, plan.space))

    def _blocked(self, outcome: layers.Outcome) -> Built:
        task, schedule = layers.blocked(outcome)
        columns = self._tuning_columns(outcome) | {"space": "structured", "space_note": "",
                                                   "tvm_layout": task.layout,
                                                   "knobs": layers.knobs_text(task, schedule)}
        return exported(self.toolchain, outcome.spec, self.toolchain.compile(schedule.mod),
                        task.packing, self.options, f"{self.name}_{BLOCKED}", columns,
                        variant=BLOCKED)

    def _tuning_columns(self, outcome: layers.Outcome) -> dict:
        record = outcome.record
        return {"tuning": outcome.source, "tuning_trials": record.trials, "tuning_s": record.tune_s,
                "tuning_wall_s": record.wall_s, "tuning_mode": self.tuning.tuning_mode}

    def _note(self, outcome: layers.Outcome) -> str:
        record, space = outcome.record, outcome.plan.space
        if outcome.source == "untuned":
            return (f"{space} space: the tuning budget was spent before this layer's first "
                    "trial: its first point, untuned, verified before timing")
        if outcome.source == "database":
            return (f"{space} space: schedule from the tuning database ({record.trials} trials, "
                    f"tuned in {record.tune_s:.0f} s earlier), verified before timing")
        how = "suite-wide" if self.tuning.tuning_mode == "suite" else "alone"
        return (f"{space} space: tuned now ({how}): {record.trials} trials, {record.tune_s:.0f} s "
                "of its own batches, saved to the database")


def _warm_start(shipped: str | None, chosen: str) -> str:
    """What the warm start did for a layer: nothing (no shipped schedule), or whether the
    shipped schedule, measured here first, is still the best the database holds."""
    if not shipped:
        return ""
    return "the shipped schedule is the best here" if shipped == chosen else \
        "tuning here found a faster schedule than the shipped one"


def _untuned_problem(db: Database, toolchain, budget: tuning.Budget) -> None:
    """Why a default-space layer has no schedule: raised as its error row."""
    why = toolchain.measure_problem
    if why:
        raise RuntimeError(f"tuning database {db.dir} holds no schedule for this layer, and it "
                           f"cannot be tuned here, since tuning measures candidates on the target "
                           f"({why.split(';')[0]}): tune it where the target runs ('pwbench "
                           "tune') and give that database with --tuning-dir")
    if budget.seconds_left <= 0:
        raise RuntimeError("the --tune-minutes budget was spent before this layer was tuned")
