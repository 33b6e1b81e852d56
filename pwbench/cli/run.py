"""`pwbench run`: benchmark a suite, verify then time every kernel, in several processes.

With no --suite, the run is the first look at what pwbench is for: the default suite in NCHW and
NHWC, torch (eager and pre-packed) and tvm-tuned side by side under a small tuning budget, with
short measurements (FIRST_LOOK), ending with both speedups per kind. Every setting of it can be
given, and a named suite gets the full defaults (torch only, 3 processes, 400 ms per kernel)."""

from __future__ import annotations

import sys

from pwbench.cli import signals
from pwbench.errors import UserError
from pwbench.cli.options import (TRIALS, add_db, add_rpc, add_tuning, add_workload, given_path,
                                 positive_float, positive_int, rpc_endpoint)

# `pwbench run` without --suite: what its defaults are (see the module docstring and README)
FIRST_LOOK = {"backend": "torch,torch-frozen,tvm-tuned", "processes": 2, "warmup_ms": 20.0,
              "sample_ms": 100.0, "trials": 8, "tune_minutes": 1.5}
FULL = {"backend": "torch", "processes": None, "warmup_ms": 50.0, "sample_ms": 400.0,
        "trials": TRIALS, "tune_minutes": None}
OPTIONAL = ("tvm-tuned",)  # left out with one line when this machine cannot run it


def add(sub):
    from pwbench.measure import instructions
    from pwbench.measure.runner import DEFAULT_PROCESSES

    run = sub.add_parser("run", help="benchmark a suite: verify, then time every kernel")
    add_workload(run, targets="cpu, x86, cuda, arm, an ARM core (neoverse-n1, ...), or a TVM target",
                 threads="threads for every backend")
    # no --suite: the first look (FIRST_LOOK); no --threads: all cores, or 1 under --clock instructions
    run.set_defaults(suite=None, threads=None)
    run.add_argument("--backend", help="comma-separated backends (default: torch, and the backends "
                                       f"of --kernels; without --suite: {FIRST_LOOK['backend']})")
    run.add_argument("--kernels", type=given_path, metavar="DIR",
                     help="run a kernel bundle made by 'pwbench build' (its layers and kernels)")
    run.add_argument("--output", type=given_path, help="run directory (default: results/<time>_<suite>_<target>)")
    run.add_argument("--warmup-ms", type=positive_float,
                     help="warm-up per kernel and process (default 50; without --suite 20)")
    run.add_argument("--sample-ms", type=positive_float,
                     help="sampling per kernel and process (default 400; without --suite 100)")
    run.add_argument("--processes", type=int, metavar="N",
                     help=f"measure every kernel in N fresh processes, pooled (default "
                          f"{DEFAULT_PROCESSES}; without --suite {FIRST_LOOK['processes']}; "
                          f"{instructions.DEFAULT_PROCESSES} under --clock instructions)")
    run.add_argument("--clock", default="time", metavar="time|instructions",
                     help="time (default: each kernel's timer), or instructions: counted by "
                          "valgrind's callgrind, one thread, the ISA capped to AVX2 (a CI gate "
                          "that does not flake; needs valgrind)")
    run.add_argument("--calls", type=positive_int, default=instructions.DEFAULT_CALLS, metavar="N",
                     help=f"--clock instructions: counted calls per kernel and process (default "
                          f"{instructions.DEFAULT_CALLS}, after {instructions.WARMUP_CALLS} "
                          f"warm-up calls and {instructions.DROPPED_CALLS} dropped one)")
    run.add_argument("--cache", default="hot", metavar="hot|cold",
                     help="hot (default), or cold: caches evicted before every sample")
    run.add_argument("--blocked", action=__import__("argparse").BooleanOptionalAction, default=True,
                     help="tvm-tuned: also time the blocked end-to-end variant (default: yes)")
    run.add_argument("--peaks", type=given_path, metavar="FILE",
                     help="peak FLOP/s and bytes/s from a TOML/JSON file instead of measured ones")
    run.add_argument("--report", action="store_true", help="write RUN_DIR/report/index.html at the end")
    run.add_argument("--record", action="store_true", help="add the run to the history database (--db)")
    add_db(run)
    add_tuning(run)
    add_rpc(run)
    run.add_argument("--fleet", metavar="HOST:PORT",
                     help="run the suite on one board of every key of this RPC tracker (one run "
                          "directory per key, under --output), then the hardware-selection report")
    return run


def settings(args) -> tuple[dict, bool]:
    """The run's settings: what was given, else the first look's (no --suite) or the full ones."""
    first_look = args.suite is None and args.kernels is None  # a bundle brings its own layers
    base = FIRST_LOOK if first_look else FULL
    given = {k: getattr(args, k) for k in base}
    return {k: base[k] if v is None else v for k, v in given.items()}, first_look


def main(args) -> int:
    if args.fleet:
        from pwbench.cli import fleet

        return fleet.run_fleet(args)
    from pwbench.cli import console
    from pwbench.measure import runner
    from pwbench.store import results

    first_look = settings(args)[1]
    config = config_of(args)
    history_db = _history(args)  # a bad --db fails now, not after everything was measured
    watch = console.RunProgress()
    plan = runner.plan(config, watch)
    if first_look:
        console.console.print(
            f"first look: suite default, {', '.join(plan.backends)}, {plan.config.processes} "
            f"processes, {config.budget.sample_ms:.0f} ms per kernel, {config.trials} tuning "
            "trials per layer (give --suite for the full settings)")
    try:
        writer = watch.run(plan)
    except KeyboardInterrupt as stop:
        print(f"pwbench: {signals.what(stop)}; every finished measurement is kept in "
              f"{plan.output}", file=sys.stderr)
        return signals.exit_status(stop)
    console.summary(writer.rows)
    console.speedups(writer.rows)
    print(f"results: {writer.dir}")
    if history_db is not None:
        from pwbench.store import history

        run_id, _ = history.add(history_db, writer.dir)
        print(f"recorded in {args.db or history.default_path()} as run {run_id}")
    if args.report:
        from pwbench import report

        print(f"report: {report.build([writer.dir], writer.dir / 'report').index}")
    failed = sum(results.failed(r) for r in writer.rows)  # failed checks are never timed
    if failed:
        print(f"pwbench: {failed} kernel(s) failed their check or could not run (see the error column)",
              file=sys.stderr)
    return 1 if failed else 0


def _history(args):
    """The history database --record will add the run to, opened (and checked) before the run."""
    if not args.record:
        return None
    from pwbench.store import history

    return history.connect(args.db)


def config_of(args, **override):
    """The RunConfig of `pwbench run`'s arguments (fields in `override` replace them)."""
    from pwbench.measure import runner, timing
    from pwbench.workloads import suites

    chosen, _ = settings(args)
    names = tuple(dict.fromkeys(b.strip() for b in chosen["backend"].split(",") if b.strip()))
    if not names:
        raise UserError(f"--backend {chosen['backend']!r} names no backend (see 'pwbench list "
                        "backends')")
    fields = dict(
        suite=args.suite or suites.DEFAULT_SUITE, target=args.target, kernels=args.kernels,
        backends=None if args.kernels and not args.backend else names, dtype=args.dtype,
        filter=args.filter, batch=args.batch, layout=args.layout, threads=args.threads,
        output=args.output, budget=timing.Budget(warmup_ms=chosen["warmup_ms"],
                                                 sample_ms=chosen["sample_ms"]),
        processes=chosen["processes"], cache=args.cache, peaks_file=args.peaks,
        trials=chosen["trials"], tune_minutes=chosen["tune_minutes"], tuning_dir=args.tuning_dir,
        spaces=args.space, tuning_mode=args.tuning_mode, blocked=args.blocked,
        optional=OPTIONAL if args.backend is None else (), clock=args.clock, calls=args.calls,
        rpc=rpc_endpoint(args))
    fields.update(override)
    return runner.RunConfig(**fields)
