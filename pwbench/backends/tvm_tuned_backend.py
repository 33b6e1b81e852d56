"""TVM tuned by MetaSchedule for this target, through a reusable tuning database
(pwbench/tvm_bridge/database.py): layers the database already holds are compiled from it, not
tuned again. Every kernel, tuned now or taken from the database, is verified before timing.

Design spaces (`--space`, tvm_bridge/spaces.py): `structured` (default), the NCHW[x]c register-
tile structure whose knobs MetaSchedule draws; a layer it does not claim (grouped, dilated, odd
shapes) falls back to `default`, MetaSchedule's own space over TOPI's compute, and its row says
so (variant `default`, column `space_note`). Asking for both shows what the structure buys.

Tuning (`--tuning`): `suite` (default) tunes every layer of the run that lacks trials as one
task set before the first kernel is built (`prepare`); `layer` tunes each layer when it is built.

Variants, one row each: the space (`structured` or `default`, in and out in the layer's layout:
NCHW or NHWC, conversions inside the kernel and so inside the timed call) and, for a structured
NCHW layer, `structured-blocked`: the same knobs on NCHW[ic_bn]c in and NCHW[oc_bn]c out, blocked
end to end as if every layer of the network used the layout (converted when loaded, not timed).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from pwbench.backends.base import Built, NoEvents, Options
from pwbench.backends.tvm_backend import exported, single_convs_only
from pwbench.errors import UserError
from pwbench.tvm_bridge import compiler, database, layouts, runtime, spaces
from pwbench.units import format_seconds
from pwbench.workloads.spec import ConvSpec

BLOCKED = "structured-blocked"
TUNING_MODES = ("suite", "layer")


class Backend:
    name = "tvm-tuned"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        """Opens (and checks) the tuning database before the first layer: a corrupted or foreign
        database stops the run with one clear line."""
        self.options, self.events, self.target_name = options, events, target.name
        bad = [s for s in options.spaces if s not in spaces.SPACES]
        if bad or not options.spaces:
            raise UserError(f"--space must be {', '.join(spaces.SPACES)} or both, got "
                            f"{','.join(options.spaces)!r}")
        self.spaces = options.spaces
        if options.clock == "instructions" and "structured" in options.spaces:
            # the instruction clock calls a TVM kernel through its C entry point with plain
            # tensors (tvm_bridge/ffi_kernel.py); a structured kernel's weight is pre-packed
            self.spaces = tuple(dict.fromkeys(s.replace("structured", "default")
                                              for s in options.spaces))
            events.note("tvm-tuned under --clock instructions: the default space (the structured "
                        "space's pre-packed weights are not counted yet)")
        if options.tuning_mode not in TUNING_MODES:
            raise UserError(f"--tuning must be one of {', '.join(TUNING_MODES)}, got "
                            f"{options.tuning_mode!r}")
        self.place = target  # where kernels are linked for and run (and candidates measured)
        self.target = target.tvm_target(options.threads)
        self.db = database.Database(options.tuning_dir, self.target, target.tuning_facts())
        self.budget = database.Budget(options.trials, options.tune_minutes)
        self.cannot_measure = target.run_problem()  # e.g. building CUDA kernels without a GPU
        self.tuned_now: set[tuple[str, str]] = set()  # (spec id, space) the suite tuning did

    def versions(self) -> dict:
        return compiler.versions(self.target) | {"tvm_target": compiler.target_string(self.target),
                                      "tuning_database": str(self.db.dir)}

    def prepare(self, workloads) -> None:
        """Suite-wide tuning: every single conv of the run as one task set, per design space."""
        if self.options.tuning_mode != "suite" or self.cannot_measure or self.place.rpc:
            return
        specs = [w for w in workloads if isinstance(w, ConvSpec)]
        self.budget = database.Budget(self.options.trials, self.options.tune_minutes)  # from now
        for space in self.spaces:
            def progress(key, trials, best_s, space=space):
                self.events.progress(f"tuning {len(specs)} layers ({space} space, suite-wide): "
                                     f"{key.split('_')[1]} at {trials} trials, best "
                                     f"{format_seconds(best_s if best_s < math.inf else math.nan)}")

            tuned = database.tune_suite(specs, self.db, self.budget, self.options.threads, space,
                                        progress)
            self.tuned_now |= {(spec_id, space) for spec_id in tuned}
        self.db.close()

    def build(self, spec: ConvSpec) -> Built | list[Built]:
        single_convs_only(spec, self.name)
        built, seen = [], set()
        for space in self.spaces:
            def progress(trials, best_s):
                best = format_seconds(best_s if best_s < math.inf else math.nan)
                self.events.progress(f"tuning {spec.label[:40]}: {trials}/{self.budget.trials} "
                                     f"trials, best {best}")

            outcome = database.ensure_tuned(spec, self.db, self.budget, self.options.threads,
                                            progress, space, self.cannot_measure,
                                            board=self.place if self.place.rpc else None)
            if (spec.id, space) in self.tuned_now and outcome.source == "database":
                outcome.source = "tuned"
            if outcome.plan.space in seen:  # a fallback that is the default space asked too
                continue
            seen.add(outcome.plan.space)
            built.append(self._built(spec, outcome))
            if self.options.blocked and outcome.task is not None and spec.layout == "NCHW":
                built.append(self._blocked(spec, outcome))
        return built[0] if len(built) == 1 else built

    # ---- kernels ----------------------------------------------------------------------------
    def _built(self, spec: ConvSpec, outcome: database.Outcome) -> Built:
        record, plan, task = outcome.record, outcome.plan, outcome.task
        columns = self._tuning_columns(outcome) | {"space": plan.space, "space_note": plan.reason,
                                                   "tvm_layout": spec.layout}
        if self.db.fingerprint.get("gpu"):
            columns["tuned_for_gpu"] = self.db.fingerprint["gpu"]
        compiled = compiler.compile_scheduled(self.target, outcome.schedule)
        packing = None
        if task is not None:
            structure, reg_n = spaces.knobs(outcome.schedule)
            columns["knobs"] = _knobs(task, structure, reg_n)
            packing = layouts.Packing(spec.layout, task.ic_bn, task.oc_bn)
        notes = [self._note(outcome)] + ([f"{plan.reason}: tuned in the default space"]
                                         if plan.reason else [])
        return self._export(spec, compiled, plan.space, packing, columns, notes,
                            database.curve_rows(spec, self.name, self.target_name, record,
                                                plan.space))

    def _blocked(self, spec: ConvSpec, outcome: database.Outcome) -> Built:
        """The tuned knobs on the blocked layout (no tuning of its own: same tile, same blocks)."""
        structure, reg_n = spaces.knobs(outcome.schedule)
        task = spaces.Task(spec, spaces.BLOCKED, outcome.task.ic_bn, outcome.task.oc_bn,
                           outcome.task.lanes, outcome.task.accumulators)
        structure = spaces.Structure(structure.unroll_kw, "direct", "stage")
        compiled = compiler.compile_scheduled(self.target, spaces.fixed(task, structure, reg_n))
        columns = self._tuning_columns(outcome) | {"space": "structured", "space_note": "",
                                                   "tvm_layout": spaces.BLOCKED,
                                                   "knobs": _knobs(task, structure, reg_n)}
        packing = layouts.Packing(spaces.BLOCKED, task.ic_bn, task.oc_bn)
        return self._export(spec, compiled, BLOCKED, packing, columns, [], [])

    def _tuning_columns(self, outcome: database.Outcome) -> dict:
        record = outcome.record
        return {"tuning": outcome.source, "tuning_trials": record.trials, "tuning_s": record.tune_s,
                "tuning_wall_s": record.wall_s, "tuning_mode": self.options.tuning_mode}

    def _export(self, spec, compiled, variant, packing, columns, notes, curve) -> Built:
        """The kernel exported into the run's work directory, made in a worker from there."""
        if packing is None:
            return exported(spec, compiled, self.target, f"{self.name}_{variant}", self.options,
                            columns, place=self.place, variant=variant, curve=curve, notes=notes)
        library = str(Path(self.options.work_dir) / f"{self.name}_{variant}_{spec.id}.so")
        compiler.export(compiled.executable, library)
        make = functools.partial(runtime.load_packed_kernel, spec, library, self.options.threads,
                                 packing)
        return Built(make, variant=variant,
                     columns={"target_string": compiler.target_string(self.target), **columns},
                     curve=curve, notes=notes, runtime_env=runtime.RUNTIME_ENV)

    def _note(self, outcome: database.Outcome) -> str:
        record, space = outcome.record, outcome.plan.space
        if outcome.source == "untuned":
            return (f"{space} space: the tuning budget was spent before this layer's first "
                    "trial: its first point, untuned, verified before timing")
        if outcome.source == "database":
            return (f"{space} space: schedule from the tuning database ({record.trials} trials, "
                    f"tuned in {record.tune_s:.0f} s earlier), verified before timing")
        how = "suite-wide" if self.options.tuning_mode == "suite" else "alone"
        return (f"{space} space: tuned now ({how}): {record.trials} trials, {record.tune_s:.0f} s "
                "of its own batches, saved to the database")


def _knobs(task: spaces.Task, structure: spaces.Structure, reg_n: int) -> str:
    return f"ic_bn={task.ic_bn};oc_bn={task.oc_bn};reg_n={reg_n};{structure.text}"
