"""TVM Relax on the host CPU: the workload's torch module exported to ONNX, imported with
`from_onnx` and compiled as one program (tvm_bridge/relax.py), exported as a library that
measuring processes run in the Relax VM with TVM's runtime only.

- `tvm-relax` (Backend): untuned. `tvm.compile`'s default CPU pipeline legalizes each operator
  into its TOPI loop nest and stops: no fusion, no schedule, every op a serial loop nest.
- `tvm-relax-tuned` (TunedBackend): the legalized, fused program tuned by MetaSchedule,
  `--trials` per task, into the run's tuning database (the same kind, and the same directory per
  fingerprint, as tvm-tuned's single layers); a second run compiles from the database.

Blocks and single convs both: a block's layers measured alone through the same backend are what
its fusion gain is measured against. A block's weights are constants of the program; a conv's
weight is an argument, loaded like its input.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from pwbench.backends.base import Built, NoEvents, Options, Unsupported
from pwbench.tvm_bridge import compiler, database, relax, runtime
from pwbench.units import format_seconds
from pwbench.workloads import torch_models


class Backend:
    name = "tvm-relax"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        self.options, self.events, self.target_name = options, events, target.name
        self.target = target.tvm_target(options.threads)

    def versions(self) -> dict:
        return compiler.versions(self.target) | {"tvm_target": compiler.target_string(self.target)}

    def program(self, workload):
        why = torch_models.exportable(workload, self.name)
        if why:
            raise Unsupported(why)
        return relax.import_onnx(torch_models.onnx_model(workload), workload)

    def build(self, workload) -> Built:
        executable = relax.compile_untuned(self.program(workload), self.target)
        return self.exported(workload, executable)

    def exported(self, workload, executable, columns: dict | None = None, **extra) -> Built:
        library = Path(self.options.work_dir) / f"{self.name}_{workload.id}.so"
        compiler.export(executable, library)
        return Built(functools.partial(runtime.load_relax_kernel, workload, str(library),
                                       self.options.threads),
                     columns={"target_string": compiler.target_string(self.target), **(columns or {})},
                     runtime_env=runtime.RUNTIME_ENV, **extra)


class TunedBackend(Backend):
    name = "tvm-relax-tuned"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        """Opens (and checks) the tuning database before the first workload, as tvm-tuned does."""
        super().__init__(target, options, events)
        self.db = database.Database(options.tuning_dir, self.target, target.tuning_facts())
        self.budget = database.Budget(options.trials, options.tune_minutes)

    def versions(self) -> dict:
        return super().versions() | {"tuning_database": str(self.db.dir)}

    def tune(self, workload, on_progress=None):
        """(database.Outcome, relax.Tuner): the workload tuned now, or taken from the database.
        `pwbench tune --backend tvm-relax-tuned` calls this alone."""
        tuner = relax.Tuner(relax.fuse(self.program(workload), self.target), self.target, workload)

        def progress(trials, best_s):
            best = format_seconds(best_s if best_s < math.inf else math.nan)
            self.events.progress(f"tuning {workload.label[:40]} ({len(tuner.tasks)} tasks): "
                                 f"{trials}/{self.budget.trials} trials per task, estimate {best}")

        outcome = database.ensure_tuned(workload, self.db, self.budget, self.options.threads,
                                        on_progress or progress, tuner=tuner)
        return outcome, tuner

    def build(self, workload) -> Built:
        outcome, tuner = self.tune(workload)
        record = outcome.record
        columns = {"tuning": outcome.source, "tuning_trials": record.trials,
                   "tuning_s": record.tune_s, "tuning_tasks": len(tuner.tasks),
                   "tuned_primfuncs": f"{tuner.scheduled}/{tuner.total}"}
        source = ("from the tuning database" if outcome.source == "database" else
                  f"tuned now ({record.tune_s:.0f} s), saved to the database")
        note = (f"{len(tuner.tasks)} task(s) ({', '.join(tuner.task_names)}), {record.trials} "
                f"trials per task {source}; {tuner.scheduled} of {tuner.total} PrimFuncs scheduled"
                + ("" if tuner.scheduled == tuner.total else
                   " (the others run untuned: the database holds no record for them)"))
        return self.exported(workload, outcome.schedule, columns,
                             curve=database.curve_rows(workload, self.name, self.target_name, record),
                             notes=[note])
