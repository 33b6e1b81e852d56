"""`pwbench tune`: tune a suite's workloads into the tuning database, with a progress bar and the
budget left, and a table of what the database holds at the end. `--backend tvm-tuned` (default)
tunes single convs in the design spaces of --space, `--backend tvm-relax-tuned` blocks and convs
through Relax, as that backend's runs use them; either way as one task set (`--tuning suite`,
default) or one workload at a time (`--tuning layer`). Ctrl-C stops after the current batch;
every finished batch stays saved, and the same command continues from there."""

from __future__ import annotations

import math

from pwbench import backends, targets
from pwbench.backends.base import Options
from pwbench.backends.tuning_options import TuningOptions
from pwbench.cli import signals
from pwbench.cli.options import add_rpc, add_workload, rpc_endpoint
from pwbench.errors import UserError
from pwbench.units import format_seconds
from pwbench.workloads import suites

TUNERS = ("tvm-tuned", "tvm-relax-tuned")


def add(sub):
    tune = sub.add_parser("tune", help="tune a suite's layers for tvm-tuned (or blocks for "
                                       "tvm-relax-tuned), without timing them")
    add_workload(tune, targets="cpu, x86, cuda, arm, an ARM core or a TVM target",
                 threads="threads the tuned kernels will run with")
    tune.add_argument("--backend", choices=TUNERS, default="tvm-tuned",
                      help="whose database entries to tune (default tvm-tuned: single convs)")
    TuningOptions.add_arguments(tune, blocked=False)
    add_rpc(tune)
    return tune


def main(args) -> int:
    from pwbench.cli.console import console

    target = targets.resolve(args.target, rpc_endpoint(args))
    target.prepare_process(args.threads)  # the tuner's worker processes inherit TVM_NUM_THREADS
    cls = backends.backend_class(args.backend, target)  # without TVM: one line, exit 2
    problem = target.run_problem()  # candidates are measured on the target
    if problem:
        raise UserError(f"cannot tune here (MetaSchedule measures every candidate on the "
                        f"target): {problem}")
    suite = suites.load(args.suite, batch=args.batch, layout=args.layout, dtype=args.dtype)
    workloads = list({s.id: s for s in suites.select(suite.layers, args.filter)}.values())
    if not workloads:
        raise UserError(f"--filter {args.filter!r} selects none of the "
                        f"{len(suite.layers)} layers of suite {suite.name}")
    tuning = TuningOptions.from_args(args)
    backend = cls(target, Options(threads=args.threads, extra={TuningOptions.group: tuning}))
    console.print(f"tuning database: {backend.db.dir}; candidates measured on {target.where}",
                  highlight=False)
    try:
        if tuning.tuning_mode == "suite":
            _tune(backend, workloads, f"{len(workloads)} workloads, one task set")
        else:
            for workload in workloads:
                _tune(backend, [workload], workload.label[:40])
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM, SIGHUP (cli/signals.py)
        console.print(f"[yellow]{signals.what(stop)}:[/] every finished batch is saved in the "
                      "database; run the same command again to continue")
        _summary(backend, workloads)
        return signals.exit_status(stop)
    finally:
        backend.session.close()
    _summary(backend, workloads)
    return 0


def _tune(backend, workloads: list, title: str) -> None:
    """One task set, one bar: the trials its workloads have had of those asked."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from pwbench.cli.console import console

    asked = backend.budget.trials
    keys = [key for w in workloads for _, key in backend.records(w)]
    done = {key: min(_trials(backend, key), asked) for key in keys}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("trials  best {task.fields[best]}  {task.fields[left]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(title, total=asked * len(keys) or 1, completed=sum(done.values()),
                                best="-", left=_left(backend.budget))

        def on_progress(key, trials, best_s):
            done[key] = min(trials, asked)
            best = format_seconds(best_s if best_s < math.inf else math.nan)
            progress.update(bar, completed=sum(done.values()), left=_left(backend.budget),
                            best=f"{best} ({key[:24]})")

        backend.tune(workloads, on_progress)


def _trials(backend, key: str) -> int:
    record = backend.db.record(key)
    return record.trials if record else 0


def _left(budget) -> str:
    left = budget.seconds_left
    return "" if left == math.inf else f"budget left {max(left, 0):.0f} s"


def _summary(backend, workloads: list) -> None:
    from rich.table import Table

    from pwbench.cli.console import console

    table = Table(title=f"tuning database {backend.db.dir}", title_justify="left")
    for col in ("workload", "kind", "space", "trials", "best (tuner)", "tuning time", "this run"):
        table.add_column(col)
    for workload in workloads:
        records = backend.records(workload)
        if not records:
            table.add_row(workload.label, workload.kind, "-", "0", "-", "-",
                          f"not tuned: {backend.name} tunes single convs")
        for space, key in records:
            record = backend.db.record(key)
            this_run = "tuned" if key in backend.tuned_now else "database" if record else "not reached"
            table.add_row(workload.label, workload.kind, space, str(record.trials if record else 0),
                          format_seconds(record.best_s if record and record.best_s < math.inf
                                         else math.nan),
                          format_seconds(record.wall_s if record else math.nan), this_run)
    console.print(table)
