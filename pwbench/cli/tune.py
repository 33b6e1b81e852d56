"""`pwbench tune`: tune a suite's layers into the tuning database, with a progress bar per layer
and the budget left. Ctrl-C stops after the current batch; every finished batch stays saved.
`--backend tvm-tuned` (default) tunes single convs, in the design spaces of --space: the layers
as one task set (`--tuning suite`, default) or one at a time (`--tuning layer`);
`--backend tvm-relax-tuned` tunes blocks and convs through Relax, as that backend's runs use them."""

from __future__ import annotations

import math

from pwbench.cli.options import TRIALS, add_rpc, add_tuning, add_workload, rpc_endpoint
from pwbench.units import format_seconds


def add(sub):
    tune = sub.add_parser("tune", help="tune a suite's layers for tvm-tuned (or blocks for "
                                       "tvm-relax-tuned), without timing them")
    add_workload(tune, targets="cpu, x86, cuda, arm, an ARM core or a TVM target",
                 threads="threads the tuned kernels will run with")
    tune.add_argument("--backend", choices=("tvm-tuned", "tvm-relax-tuned"), default="tvm-tuned",
                      help="whose database entries to tune (default tvm-tuned: single convs)")
    add_tuning(tune)
    add_rpc(tune)
    return tune


def main(args) -> int:
    from pwbench import backends, targets
    from pwbench.backends.base import Options
    from pwbench.cli.console import console
    from pwbench.errors import UserError
    from pwbench.workloads import suites

    target = targets.resolve(args.target, rpc_endpoint(args))
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
    # the backend checks --space and --tuning and opens (and checks) the database
    backend = cls(target, Options(threads=args.threads, trials=args.trials or TRIALS,
                                  tune_minutes=args.tune_minutes, tuning_dir=args.tuning_dir,
                                  spaces=args.space, tuning_mode=args.tuning_mode))
    db, budget = backend.db, backend.budget
    passes = _passes(args, backend, specs)
    console.print(f"tuning database: {db.dir}")
    if target.rpc is not None:
        from pwbench.tvm_bridge import rpc

        console.print(f"measuring candidates on {rpc.boards(target.rpc)} board(s) under {target.rpc}")
    outcomes = {}
    try:
        for space, key, tune_one, suite_wide in passes:
            if suite_wide:
                _tune_suite(specs, db, budget, args.threads, space, outcomes)
            else:
                _tune_layers(specs, db, budget, space, key, tune_one, outcomes)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] every finished batch is saved in the database; "
                      "run the same command again to continue")
        _summary(specs, db, passes, outcomes)
        return 130
    finally:
        db.close()
    _summary(specs, db, passes, outcomes)
    return 0


def _passes(args, backend, specs) -> list[tuple]:
    """(space, record key of a workload, tune one workload, suite-wide?) per pass over the specs."""
    from pwbench.tvm_bridge import database, spaces

    if args.backend == "tvm-relax-tuned":
        from pwbench.tvm_bridge import relax

        return [("relax", relax.key, lambda spec, on_progress: backend.tune(spec, on_progress)[0].source,
                 False)]
    board = backend.place if backend.place.rpc else None  # its boards measure the candidates
    passes = []
    for space in args.space:
        def key(spec, space=space):
            if not _is_conv(spec):
                return None
            return database.record_key(spec, spaces.plan(spec, backend.db.target, space).space)

        def tune_one(spec, on_progress, space=space):
            return database.ensure_tuned(spec, backend.db, backend.budget, args.threads,
                                         on_progress, space, board=board).source

        passes.append((space, key, tune_one, args.tuning_mode == "suite"
                       and not backend.cannot_measure and board is None
                       and all(map(_is_conv, specs))))
    return passes


def _is_conv(spec) -> bool:
    from pwbench.workloads.spec import ConvSpec

    return isinstance(spec, ConvSpec)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pwbench.cli.console import console

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("trials  best {task.fields[best]}  {task.fields[left]}"),
               TimeElapsedColumn())
    return Progress(*columns, console=console)


def _tune_layers(specs, db, budget, space, key, tune_one, outcomes) -> None:
    from pwbench.backends.base import Unsupported

    with _progress() as progress:
        for spec in specs:
            if space != "relax" and not _is_conv(spec):
                outcomes[(spec.id, space)] = (f"not tuned: a {spec.kind} block (tune blocks with "
                                              "--backend tvm-relax-tuned)")
                continue
            record = db.record(key(spec))
            task = progress.add_task(spec.label[:40], total=budget.trials,
                                     completed=min(record.trials if record else 0, budget.trials),
                                     best="-", left=_left(budget))

            def on_progress(trials, best_s, task=task):
                progress.update(task, completed=min(trials, budget.trials), left=_left(budget),
                                best=format_seconds(best_s if best_s < math.inf else math.nan))
            done = (spec.id, space)
            try:
                outcomes[done] = tune_one(spec, on_progress)
            except (RuntimeError, Unsupported) as exc:  # budget spent, no valid schedule, NHWC
                outcomes[done] = f"not tuned: {exc}"
            except KeyboardInterrupt:
                outcomes[done] = "interrupted"
                raise
            progress.update(task, description=f"{spec.label[:40]} ({outcomes[done][:20]})")


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


def _summary(specs, db, passes, outcomes) -> None:
    from rich.table import Table

    from pwbench.cli.console import console

    table = Table(title=f"tuning database {db.dir}", title_justify="left")
    for col in ("layer", "kind", "space", "trials", "best (tuner)", "tuning time", "this run"):
        table.add_column(col)
    for space, key, _, _ in passes:
        for spec in specs:
            name = key(spec)
            record = db.record(name) if name else None
            best = min((c[2] for c in record.curve if c[2] is not None), default=math.nan) \
                if record else math.nan
            shown = (space if space == "relax" or (name or "").endswith(f"@{space}")
                     else "default" + ("" if space == "default" else " (fallback)"))
            table.add_row(spec.label, spec.kind, shown, str(record.trials if record else 0),
                          format_seconds(best), format_seconds(record.wall_s if record else math.nan),
                          outcomes.get((spec.id, space), "not reached"))
    console.print(table)
