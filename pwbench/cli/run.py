"""`pwbench run`: benchmark a suite, verify then time every kernel, in several processes."""

from __future__ import annotations

import sys
from pathlib import Path

from pwbench.cli import EXIT_INTERRUPTED
from pwbench.cli.options import (add_db, add_rpc, add_tuning, add_workload, positive_float,
                                 positive_int, rpc_endpoint)


def add(sub):
    from pwbench.measure.runner import DEFAULT_PROCESSES

    run = sub.add_parser("run", help="benchmark a suite: verify, then time every kernel")
    add_workload(run, targets="cpu, x86, cuda, arm, an ARM core (neoverse-n1, ...), or a TVM target",
                 threads="threads for every backend")
    run.add_argument("--backend", default="torch", help="comma-separated backends (default: torch)")
    run.add_argument("--output", type=Path, help="run directory (default: results/<time>_<suite>_<target>)")
    run.add_argument("--warmup-ms", type=positive_float, default=50.0,
                     help="warm-up per kernel and process (default 50)")
    run.add_argument("--sample-ms", type=positive_float, default=400.0,
                     help="sampling per kernel and process (default 400)")
    run.add_argument("--processes", type=int, default=DEFAULT_PROCESSES, metavar="N",
                     help=f"measure every kernel in N fresh processes, pooled (default {DEFAULT_PROCESSES})")
    run.add_argument("--cache", default="hot", metavar="hot|cold",
                     help="hot (default), or cold: caches evicted before every sample")
    run.add_argument("--peaks", type=Path, metavar="FILE",
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


def main(args) -> int:
    if args.fleet:
        from pwbench.cli import fleet

        return fleet.run_fleet(args)
    from pwbench.cli import console
    from pwbench.measure import runner
    from pwbench.store import results

    config = config_of(args)
    watch = console.RunProgress()
    plan = runner.plan(config, watch)
    try:
        writer = watch.run(plan)
    except KeyboardInterrupt:
        print("pwbench: interrupted; every finished measurement is kept in the run directory",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    console.summary(writer.rows)
    print(f"results: {writer.dir}")
    if args.record:
        from pwbench.store import history

        run_id, _ = history.add(history.connect(args.db), writer.dir)
        print(f"recorded in {args.db or history.default_path()} as run {run_id}")
    if args.report:
        from pwbench import report

        print(f"report: {report.build([writer.dir], writer.dir / 'report').index}")
    failed = sum(results.failed(r) for r in writer.rows)  # failed checks are never timed
    if failed:
        print(f"pwbench: {failed} kernel(s) failed their check or could not run (see the error column)",
              file=sys.stderr)
    return 1 if failed else 0


def config_of(args, **override):
    """The RunConfig of `pwbench run`'s arguments (fields in `override` replace them)."""
    from pwbench.measure import runner, timing

    fields = dict(
        suite=args.suite, target=args.target,
        backends=tuple(b.strip() for b in args.backend.split(",") if b.strip()),
        filter=args.filter, batch=args.batch, layout=args.layout, threads=args.threads,
        output=args.output, budget=timing.Budget(warmup_ms=args.warmup_ms, sample_ms=args.sample_ms),
        processes=args.processes, cache=args.cache, peaks_file=args.peaks, trials=args.trials,
        tune_minutes=args.tune_minutes, tuning_dir=args.tuning_dir,
        rpc=rpc_endpoint(args))
    fields.update(override)
    return runner.RunConfig(**fields)
