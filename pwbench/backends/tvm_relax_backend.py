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

import math

from pwbench.backends.base import Built, NoEvents, Options, Unsupported
from pwbench.backends.tuning_options import TuningOptions
from pwbench.backends.tvm_backend import exported
from pwbench.tvm_bridge import relax, tuning
from pwbench.tvm_bridge.database import Database, LayerRecord
from pwbench.units import format_seconds
from pwbench.workloads import torch_models


class Backend:
    name = "tvm-relax"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        self.options, self.events, self.target_name = options, events, target.name
        self.toolchain = target.toolchain(options.threads)

    def versions(self) -> dict:
        return self.toolchain.versions()

    def program(self, workload):
        why = torch_models.exportable(workload, self.name)
        if why:
            raise Unsupported(why)
        return relax.import_onnx(torch_models.onnx_model(workload), workload)

    def build(self, workload) -> Built:
        return self.exported(workload, self.toolchain.compile(self.program(workload)))

    def exported(self, workload, compiled, columns: dict | None = None, **extra) -> Built:
        return exported(self.toolchain, workload, compiled, None, self.options, self.name, columns,
                        convention="vm", **extra)


class TunedBackend(Backend):
    name = "tvm-relax-tuned"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        """Opens (and checks) the tuning database before the first workload, as tvm-tuned does."""
        super().__init__(target, options, events)
        self.tuning = options.of(TuningOptions)
        self.db = Database(self.tuning.tuning_dir, self.toolchain.target, target.tuning_facts())
        self.session = tuning.Session(self.db, self.toolchain, options.threads)
        self.budget = tuning.Budget(self.tuning.trials, self.tuning.tune_minutes)
        self.tuned_now: set[str] = set()
        self._fused: dict = {}

    def versions(self) -> dict:
        return super().versions() | {"tuning_database": str(self.db.dir)}

    @property
    def structured(self) -> bool:
        """Whether the structured space takes the convs it claims (a CPU target, asked for)."""
        return self.toolchain.structured and "structured" in self.tuning.spaces

    def fused(self, workload) -> tuple[object, tuning.Job]:
        """(the fused module, its tuning job), made once per workload."""
        if workload.id not in self._fused:
            target, structured = self.toolchain.target, {}
            program = self.program(workload)
            if self.structured:
                program, structured = relax.structure(program, target)
            fused = relax.fuse(program, target)
            self._fused[workload.id] = (fused, relax.job(fused, target, workload, structured))
        return self._fused[workload.id]

    def records(self, workload) -> list[tuple[str, str]]:
        key = self.fused(workload)[1].key
        return [("relax" + (" structured" if key.endswith("@structured") else ""), key)]

    def tune(self, workloads: list, on_progress=None) -> set[str]:
        """The workloads that lack trials tuned now, their fused PrimFuncs as one task set
        (`pwbench tune --backend tvm-relax-tuned`, and each build)."""
        jobs = [self.fused(w)[1] for w in workloads]

        def progress(key, trials, best_s):
            best = format_seconds(best_s if best_s < math.inf else math.nan)
            self.events.progress(f"tuning {key.removeprefix('relax:')[:40]}: {trials}/"
                                 f"{self.budget.trials} trials per task, estimate {best}")

        done = self.session.tune(jobs, self.budget, on_progress or progress)
        self.tuned_now |= done
        return done

    def build(self, workload) -> Built:
        self.tune([workload])
        fused, job = self.fused(workload)
        source = "tuned" if job.key in self.tuned_now else "database"
        compiled, scheduled, total = relax.compile_tuned(fused, self.toolchain, self.db.tvm())
        record = self.db.record(job.key) or LayerRecord()
        columns = {"tuning": source if scheduled else "untuned", "tuning_trials": record.trials,
                   "tuning_s": record.tune_s, "tuning_tasks": len(job.tasks),
                   "space": "structured" if job.key.endswith("@structured") else "default",
                   "tuned_primfuncs": f"{scheduled}/{total}"}
        how = ("from the tuning database" if source == "database" else
               f"tuned now ({record.tune_s:.0f} s), saved to the database")
        note = (f"{len(job.tasks)} task(s) ({', '.join(t.name for t in job.tasks)}), "
                f"{record.trials} trials per task {how}; {scheduled} of {total} PrimFuncs "
                "scheduled" + ("" if scheduled == total else
                               " (the others run untuned: the database holds no record for them)"))
        return self.exported(workload, compiled, columns, notes=[note],
                             curve=tuning.curve_rows(workload, self.name, self.target_name, record))
