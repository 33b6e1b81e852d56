"""TVM tuned by MetaSchedule for this target, through a reusable tuning database
(pwbench/tvm_bridge/database.py): layers the database already holds are compiled from it, not
tuned again. Every kernel, tuned now or taken from the database, is verified before timing."""

from __future__ import annotations

import math

from pwbench.backends.base import Built, NoEvents, Options
from pwbench.backends.tvm_backend import exported, single_convs_only
from pwbench.tvm_bridge import compiler, database
from pwbench.units import format_seconds
from pwbench.workloads.spec import ConvSpec


class Backend:
    name = "tvm-tuned"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        """Opens (and checks) the tuning database before the first layer: a corrupted or foreign
        database stops the run with one clear line."""
        self.options, self.events, self.target_name = options, events, target.name
        self.place = target  # where kernels are linked for and run (and candidates measured)
        self.target = target.tvm_target(options.threads)
        self.db = database.Database(options.tuning_dir, self.target, target.fingerprint_facts())
        self.budget = database.Budget(options.trials, options.tune_minutes)

    def versions(self) -> dict:
        return compiler.versions() | {"tvm_target": compiler.target_string(self.target),
                                      "tuning_database": str(self.db.dir)}

    def build(self, spec: ConvSpec) -> Built:
        single_convs_only(spec, self.name)
        def progress(trials, best_s):
            best = format_seconds(best_s if best_s < math.inf else math.nan)
            self.events.progress(f"tuning {spec.label[:40]}: {trials}/{self.budget.trials} trials, "
                                 f"best {best}")

        outcome = database.ensure_tuned(spec, self.db, self.budget, self.options.threads, progress,
                                        board=self.place if self.place.rpc else None)
        record = outcome.record
        columns = {"tuning": outcome.source, "tuning_trials": record.trials,
                   "tuning_s": record.tune_s}
        if outcome.source == "database":
            note = (f"schedule from the tuning database ({record.trials} trials, tuned in "
                    f"{record.tune_s:.0f} s earlier), verified before timing")
        else:
            note = f"tuned now: {record.trials} trials in {record.tune_s:.0f} s, saved to the database"
        return exported(spec, compiler.compile_scheduled(self.target, outcome.schedule), self.target,
                        self.name, self.options, columns, place=self.place,
                        curve=database.curve_rows(spec, self.name, self.target_name, record),
                        notes=[note])
