"""`pwbench tune`: tune a suite's layers into the tuning database, with a progress bar per layer
and the budget left. Ctrl-C stops after the current batch; every finished batch stays saved."""

from __future__ import annotations

import math

from pwbench.cli.options import add_rpc, add_tuning, add_workload, rpc_endpoint
from pwbench.units import format_seconds


def add(sub):
    tune = sub.add_parser("tune", help="tune a suite's layers for tvm-tuned, without timing them")
    add_workload(tune, targets="cpu, x86, arm, an ARM core or a TVM target",
                 threads="threads the tuned kernels will run with")
    add_tuning(tune)
    add_rpc(tune)
    return tune


def main(args) -> int:
    from pwbench import backends, targets
    from pwbench.cli.console import console
    from pwbench.errors import UserError
    from pwbench.workloads import suites

    target = targets.resolve(args.target, rpc_endpoint(args))
    target.prepare_process(args.threads)  # the tuner's worker processes inherit TVM_NUM_THREADS
    backends.backend_class("tvm-tuned", target)  # without TVM: one line, exit 2
    targets.require_runnable(target)  # candidates are measured on the target
    suite = suites.load(args.suite, batch=args.batch, layout=args.layout)
    specs = list({s.id: s for s in suites.select(suite.layers, args.filter)}.values())
    if not specs:
        raise UserError(f"--filter {args.filter!r} selects none of the "
                        f"{len(suite.layers)} layers of suite {suite.name}")
    from pwbench.tvm_bridge import database

    db = database.Database(args.tuning_dir, target.tvm_target(args.threads), target.fingerprint_facts())
    budget = database.Budget(args.trials, args.tune_minutes)
    console.print(f"tuning database: {db.dir}")
    if target.rpc is not None:
        from pwbench.tvm_bridge import rpc

        console.print(f"measuring candidates on {rpc.boards(target.rpc)} board(s) under {target.rpc}")
    outcomes = {}
    try:
        _tune_all(specs, db, budget, args.threads, outcomes, target if target.rpc else None)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] every finished batch is saved in the database; "
                      "run the same command again to continue")
        _summary(specs, db, outcomes)
        return 130
    _summary(specs, db, outcomes)
    return 0


def _tune_all(specs, db, budget, threads, outcomes, board=None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pwbench.cli.console import console
    from pwbench.tvm_bridge import database

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("trials  best {task.fields[best]}  {task.fields[left]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for spec in specs:
            record = db.record(spec)
            task = progress.add_task(spec.label[:40], total=budget.trials,
                                     completed=min(record.trials if record else 0, budget.trials),
                                     best="-", left=_left(budget))

            def on_progress(trials, best_s, task=task):
                progress.update(task, completed=min(trials, budget.trials), left=_left(budget),
                                best=format_seconds(best_s if best_s < math.inf else math.nan))
            try:
                outcomes[spec.id] = database.ensure_tuned(spec, db, budget, threads, on_progress,
                                                          board).source
            except RuntimeError as exc:  # budget spent, or no valid schedule found
                outcomes[spec.id] = f"not tuned: {exc}"
            except KeyboardInterrupt:
                outcomes[spec.id] = "interrupted"
                raise
            progress.update(task, description=f"{spec.label[:40]} ({outcomes[spec.id][:20]})")


def _left(budget) -> str:
    left = budget.seconds_left
    return "" if left == math.inf else f"budget left {max(left, 0):.0f} s"


def _summary(specs, db, outcomes) -> None:
    from rich.table import Table

    from pwbench.cli.console import console

    table = Table(title=f"tuning database {db.dir}", title_justify="left")
    for col in ("layer", "kind", "trials", "best (tuner)", "tuning time", "this run"):
        table.add_column(col)
    for spec in specs:
        record = db.record(spec)
        best = min((c[2] for c in record.curve if c[2] is not None), default=math.nan) if record \
            else math.nan
        table.add_row(spec.label, spec.kind, str(record.trials if record else 0),
                      format_seconds(best), format_seconds(record.tune_s if record else math.nan),
                      outcomes.get(spec.id, "not reached"))
    console.print(table)
