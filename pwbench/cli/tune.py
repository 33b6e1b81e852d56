"""`pwbench tune`: tune a suite's layers into the tuning database, with a progress bar per layer
and the budget left. Ctrl-C stops after the current batch; every finished batch stays saved.
`--backend tvm-tuned` (default) tunes single convs' TOPI PrimFuncs; `--backend tvm-relax-tuned`
tunes blocks and convs through Relax, as that backend's runs will use them."""

from __future__ import annotations

import functools
import math

from pwbench.cli.options import add_tuning, add_workload
from pwbench.units import format_seconds


def add(sub):
    tune = sub.add_parser("tune", help="tune a suite's layers for tvm-tuned (or blocks for "
                                       "tvm-relax-tuned), without timing them")
    add_workload(tune, targets="cpu, x86, cuda or a TVM target",
                 threads="threads the tuned kernels will run with")
    tune.add_argument("--backend", choices=("tvm-tuned", "tvm-relax-tuned"), default="tvm-tuned",
                      help="whose database entries to tune (default tvm-tuned: single convs)")
    add_tuning(tune)
    return tune


def main(args) -> int:
    from pwbench import backends, targets
    from pwbench.cli.console import console
    from pwbench.errors import UserError
    from pwbench.workloads import suites

    target = targets.resolve(args.target)
    target.prepare_process(args.threads)  # the tuner's worker processes inherit TVM_NUM_THREADS
    cls = backends.backend_class(args.backend, target)  # without TVM: one line, exit 2
    problem = target.run_problem()  # candidates are measured on the target
    if problem:
        raise UserError(f"cannot tune here (MetaSchedule measures every candidate on the "
                        f"target): {problem}")
    suite = suites.load(args.suite, batch=args.batch, layout=args.layout, dtype=args.dtype)
    specs = list({s.id: s for s in suites.select(suite.layers, args.filter)}.values())
    if not specs:
        raise UserError(f"--filter {args.filter!r} selects none of the "
                        f"{len(suite.layers)} layers of suite {suite.name}")
    from pwbench.tvm_bridge import compiler, database

    if args.backend == "tvm-tuned":
        db = database.Database(args.tuning_dir, target.tvm_target(args.threads),
                               target.tuning_facts())
        budget = database.Budget(args.trials, args.tune_minutes)
        tune_one = functools.partial(_tune_layer, db=db, budget=budget, threads=args.threads)
        key = compiler.key
    else:
        from pwbench.backends.base import Options
        from pwbench.tvm_bridge import relax as relax_bridge

        relax = cls(target, Options(threads=args.threads, trials=args.trials,
                                    tune_minutes=args.tune_minutes, tuning_dir=args.tuning_dir))
        db, budget, key = relax.db, relax.budget, relax_bridge.key

        def tune_one(spec, on_progress):
            return relax.tune(spec, on_progress)[0].source
    console.print(f"tuning database: {db.dir}")
    outcomes = {}
    try:
        _tune_all(specs, db, budget, tune_one, key, outcomes)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] every finished batch is saved in the database; "
                      "run the same command again to continue")
        _summary(specs, db, key, outcomes)
        return 130
    _summary(specs, db, key, outcomes)
    return 0


def _tune_layer(spec, on_progress, db, budget, threads) -> str:
    from pwbench.tvm_bridge import database
    from pwbench.workloads.spec import ConvSpec

    if not isinstance(spec, ConvSpec):
        return f"not tuned: a {spec.kind} block (tune blocks with --backend tvm-relax-tuned)"
    return database.ensure_tuned(spec, db, budget, threads, on_progress).source


def _tune_all(specs, db, budget, tune_one, key, outcomes) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pwbench.backends.base import Unsupported
    from pwbench.cli.console import console

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("trials  best {task.fields[best]}  {task.fields[left]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for spec in specs:
            record = db.record(key(spec))
            task = progress.add_task(spec.label[:40], total=budget.trials,
                                     completed=min(record.trials if record else 0, budget.trials),
                                     best="-", left=_left(budget))

            def on_progress(trials, best_s, task=task):
                progress.update(task, completed=min(trials, budget.trials), left=_left(budget),
                                best=format_seconds(best_s if best_s < math.inf else math.nan))
            try:
                outcomes[spec.id] = tune_one(spec, on_progress)
            except (RuntimeError, Unsupported) as exc:  # budget spent, no valid schedule, NHWC
                outcomes[spec.id] = f"not tuned: {exc}"
            except KeyboardInterrupt:
                outcomes[spec.id] = "interrupted"
                raise
            progress.update(task, description=f"{spec.label[:40]} ({outcomes[spec.id][:20]})")


def _left(budget) -> str:
    left = budget.seconds_left
    return "" if left == math.inf else f"budget left {max(left, 0):.0f} s"


def _summary(specs, db, key, outcomes) -> None:
    from rich.table import Table

    from pwbench.cli.console import console

    table = Table(title=f"tuning database {db.dir}", title_justify="left")
    for col in ("layer", "kind", "trials", "best (tuner)", "tuning time", "this run"):
        table.add_column(col)
    for spec in specs:
        record = db.record(key(spec))
        best = min((c[2] for c in record.curve if c[2] is not None), default=math.nan) if record \
            else math.nan
        table.add_row(spec.label, spec.kind, str(record.trials if record else 0),
                      format_seconds(best), format_seconds(record.tune_s if record else math.nan),
                      outcomes.get(spec.id, "not reached"))
    console.print(table)
