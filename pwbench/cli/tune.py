"""`pwbench tune`: tune a suite's layers into the tuning database, with a progress bar per layer
and the budget left. Ctrl-C stops after the current batch; every finished batch stays saved.
`--tuning suite` (default) tunes the layers as one task set, `--tuning layer` one at a time."""

from __future__ import annotations

import math

from pwbench.cli.options import TRIALS, add_tuning, add_workload
from pwbench.units import format_seconds


def add(sub):
    tune = sub.add_parser("tune", help="tune a suite's layers for tvm-tuned, without timing them")
    add_workload(tune, targets="cpu, x86 or a TVM target", threads="threads the tuned kernels will run with")
    add_tuning(tune)
    return tune


def main(args) -> int:
    from pwbench import backends, targets
    from pwbench.cli.console import console
    from pwbench.errors import UserError
    from pwbench.workloads import suites

    target = targets.resolve(args.target)
    target.prepare_process(args.threads)  # the tuner's worker processes inherit TVM_NUM_THREADS
    backends.backend_class("tvm-tuned", target)  # without TVM: one line, exit 2
    targets.require_runnable(target)  # candidates are measured on the target
    suite = suites.load(args.suite, batch=args.batch, layout=args.layout)
    specs = list({s.id: s for s in suites.select(suite.layers, args.filter)}.values())
    if not specs:
        raise UserError(f"--filter {args.filter!r} selects none of the "
                        f"{len(suite.layers)} layers of suite {suite.name}")
    from pwbench.backends.base import Options
    from pwbench.backends.tvm_tuned_backend import Backend
    from pwbench.tvm_bridge import database

    # the backend checks --space and --tuning and opens (and checks) the database
    backend = Backend(target, Options(threads=args.threads, trials=args.trials or TRIALS,
                                      tune_minutes=args.tune_minutes, tuning_dir=args.tuning_dir,
                                      spaces=args.space, tuning_mode=args.tuning_mode))
    db, budget = backend.db, database.Budget(args.trials or TRIALS, args.tune_minutes)
    console.print(f"tuning database: {db.dir}")
    outcomes = {}
    try:
        for space in args.space:
            if args.tuning_mode == "suite":
                _tune_suite(specs, db, budget, args.threads, space, outcomes)
            else:
                _tune_layers(specs, db, budget, args.threads, space, outcomes)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] every finished batch is saved in the database; "
                      "run the same command again to continue")
        _summary(specs, db, outcomes, args.space)
        return 130
    finally:
        db.close()
    _summary(specs, db, outcomes, args.space)
    return 0


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pwbench.cli.console import console

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("trials  best {task.fields[best]}  {task.fields[left]}"),
               TimeElapsedColumn())
    return Progress(*columns, console=console)


def _tune_layers(specs, db, budget, threads, space, outcomes) -> None:
    from pwbench.tvm_bridge import database, spaces

    with _progress() as progress:
        for spec in specs:
            record = db.record(spec, spaces.plan(spec, db.target, space).space)
            task = progress.add_task(spec.label[:40], total=budget.trials,
                                     completed=min(record.trials if record else 0, budget.trials),
                                     best="-", left=_left(budget))

            def on_progress(trials, best_s, task=task):
                progress.update(task, completed=min(trials, budget.trials), left=_left(budget),
                                best=format_seconds(best_s if best_s < math.inf else math.nan))
            key = (spec.id, space)
            try:
                outcomes[key] = database.ensure_tuned(spec, db, budget, threads, on_progress,
                                                      space).source
            except RuntimeError as exc:  # budget spent, or no valid schedule found
                outcomes[key] = f"not tuned: {exc}"
            except KeyboardInterrupt:
                outcomes[key] = "interrupted"
                raise
            progress.update(task, description=f"{spec.label[:40]} ({outcomes[key][:20]})")


def _tune_suite(specs, db, budget, threads, space, outcomes) -> None:
    """One task set: one bar for the suite's trials, the layers' own lines in the summary."""
    from pwbench.tvm_bridge import database

    with _progress() as progress:
        done = {}
        task = progress.add_task(f"{len(specs)} layers, {space} space, suite-wide",
                                 total=budget.trials * len(specs), best="-", left=_left(budget))

        def on_progress(key, trials, best_s):
            done[key] = trials
            progress.update(task, completed=min(sum(done.values()), budget.trials * len(specs)),
                            left=_left(budget), best=f"{format_seconds(best_s)} ({key[:24]})")
        tuned = database.tune_suite(specs, db, budget, threads, space, on_progress)
    for spec in specs:
        outcomes[(spec.id, space)] = tuned.get(spec.id, "database")


def _left(budget) -> str:
    left = budget.seconds_left
    return "" if left == math.inf else f"budget left {max(left, 0):.0f} s"


def _summary(specs, db, outcomes, chosen) -> None:
    from rich.table import Table

    from pwbench.cli.console import console
    from pwbench.tvm_bridge import spaces

    table = Table(title=f"tuning database {db.dir}", title_justify="left")
    for col in ("layer", "kind", "space", "trials", "best (tuner)", "tuning time", "this run"):
        table.add_column(col)
    for space in chosen:
        for spec in specs:
            plan = spaces.plan(spec, db.target, space)
            record = db.record(spec, plan.space)
            best = min((c[2] for c in record.curve if c[2] is not None), default=math.nan) \
                if record else math.nan
            shown = plan.space + (" (fallback)" if plan.reason else "")
            table.add_row(spec.label, spec.kind, shown, str(record.trials if record else 0),
                          format_seconds(best), format_seconds(record.wall_s if record else math.nan),
                          outcomes.get((spec.id, space), "not reached"))
    console.print(table)
