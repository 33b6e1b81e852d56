"""The `pwbench` command line. Bad input is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from pwbench.errors import UserError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the whole usage first
        raise UserError(f"{message} (see '{self.prog} --help')")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_tuning_options(parser) -> None:
    parser.add_argument("--trials", type=positive_int, default=64,
                        help="tvm-tuned: MetaSchedule trials per layer (default 64)")
    parser.add_argument("--tune-minutes", type=positive_float, metavar="M",
                        help="tvm-tuned: stop tuning after M minutes for the whole suite")
    parser.add_argument("--tuning-dir", type=Path, metavar="DIR",
                        help="tuning database root, or one database (default: <cache dir>/tuning)")


def add_db_option(parser, default=None) -> None:
    parser.add_argument("--db", type=Path, default=default, metavar="PATH",
                        help="history database (default: $PWBENCH_HISTORY, else results/history.sqlite)")


def add_workload_options(parser, targets: str, threads: str) -> None:
    """What to run and where: shared by run and tune."""
    parser.add_argument("--target", default="cpu", help=f"{targets} (default: cpu)")
    parser.add_argument("--suite", default="default", help="a builtin suite name or a .toml path")
    parser.add_argument("--filter", help="pandas query over layer columns, e.g. \"kind == 'depthwise'\"")
    parser.add_argument("--batch", type=positive_int, help="override every layer's batch size")
    parser.add_argument("--layout", choices=("NCHW", "NHWC"), help="override every layer's layout")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                        help=f"{threads} (default: all cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pwbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="benchmark a suite: verify, then time every kernel")
    add_workload_options(run, targets="cpu, x86, cuda, arm, or a TVM target",
                         threads="threads for every backend")
    run.add_argument("--backend", default="torch", help="comma-separated backends (default: torch)")
    run.add_argument("--output", type=Path, help="run directory (default: results/<time>_<suite>_<target>)")
    run.add_argument("--warmup-ms", type=float, default=50.0, help="warm-up per kernel (default 50)")
    run.add_argument("--sample-ms", type=float, default=400.0, help="sampling per kernel (default 400)")
    run.add_argument("--peaks", type=Path, metavar="FILE",
                     help="peak FLOP/s and bytes/s from a TOML/JSON file instead of measured ones")
    run.add_argument("--report", action="store_true", help="write RUN_DIR/report/index.html at the end")
    run.add_argument("--record", action="store_true", help="add the run to the history database (--db)")
    add_db_option(run)
    add_tuning_options(run)

    tune = sub.add_parser("tune", help="tune a suite's layers for tvm-tuned, without timing them")
    add_workload_options(tune, targets="cpu, x86 or a TVM target",
                         threads="threads the tuned kernels will run with")
    add_tuning_options(tune)

    lst = sub.add_parser("list", help="list suites, backends or targets")
    lst.add_argument("what", choices=("suites", "backends", "targets"))

    sub.add_parser("env", help="print the environment metadata a run records")

    pk = sub.add_parser("peaks", help="measure peak FLOP/s and memory bandwidth (cached per machine)")
    pk.add_argument("--target", default="cpu", help="cpu or cuda (default: cpu)")
    pk.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                    help="threads (default: all cores)")
    pk.add_argument("--refresh", action="store_true", help="measure again even when cached")
    pk.add_argument("--json", action="store_true", help="print the peaks as JSON")

    rep = sub.add_parser("report", help="tables, roofline and comparison figures as one index.html")
    rep.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="one or more run directories")
    rep.add_argument("--out", type=Path, help="output directory (default: RUN_DIR/report for one run, "
                                              "results/report_<time> for several)")
    rep.add_argument("--peaks", type=Path, metavar="FILE", help="replace every run's peaks (TOML/JSON)")
    rep.add_argument("--baseline", default="torch", help="backend speedups are relative to (default: torch)")
    rep.add_argument("--machines", type=Path, metavar="FILE",
                     help="TOML with price_per_hour and watts per machine ([[machine]] match = ...)")
    rep.add_argument("--price", action="append", default=[], metavar="MATCH=USD_PER_HOUR",
                     help="price of a machine (a run label, hostname or run directory name)")
    rep.add_argument("--watts", action="append", default=[], metavar="MATCH=WATTS",
                     help="power draw of a machine")

    cmp = sub.add_parser("compare", help="regression verdict per kernel: exit 1 when NEW is slower or broken")
    cmp.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                     help="BASE NEW, or only NEW with --against-history")
    cmp.add_argument("--threshold", default="5%", help="smallest change that counts (default 5%%)")
    cmp.add_argument("--format", choices=("table", "md", "json"), default="table",
                     help="table (terminal), md (a CI comment) or json")
    cmp.add_argument("--all", action="store_true", help="list every kernel, not only the changed ones")
    cmp.add_argument("--against-history", action="store_true",
                     help="compare NEW with the recent recorded runs of its environment fingerprint")
    cmp.add_argument("--history-runs", type=positive_int, default=5, metavar="N",
                     help="with --against-history: how many recent runs to pool (default 5)")
    add_db_option(cmp)

    hist = sub.add_parser("history", help="recorded runs; a layer's trend across runs and commits")
    hist.add_argument("--layer", help="a layer name or spec id (substring or glob): show its trend")
    hist.add_argument("--backend", help="only this backend")
    hist.add_argument("--fingerprint", help="only runs with this environment fingerprint")
    hist.add_argument("--format", choices=("table", "json"), default="table")
    add_db_option(hist)
    hist_sub = hist.add_subparsers(dest="history_command", parser_class=_Parser)
    hist_add = hist_sub.add_parser("add", help="record run directories in the history database")
    hist_add.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    add_db_option(hist_add, argparse.SUPPRESS)  # `history --db X add` and `history add --db X`

    exp = sub.add_parser("export", help="a run in another tool's format (pytest-benchmark JSON)")
    exp.add_argument("run", type=Path, metavar="RUN_DIR")
    exp.add_argument("--format", choices=("pytest-benchmark",), default="pytest-benchmark")
    exp.add_argument("--output", type=Path, metavar="FILE",
                     help="where to write (default: RUN_DIR/pytest-benchmark.json)")
    return parser


def cmd_run(args) -> int:
    from pwbench.measure import runner, timing  # after apply_threads: thread pools read env at start

    runner.apply_threads(args.threads)
    config = runner.RunConfig(
        suite=args.suite, target=args.target,
        backends=tuple(b.strip() for b in args.backend.split(",") if b.strip()),
        filter=args.filter, batch=args.batch, layout=args.layout, threads=args.threads,
        output=args.output, budget=timing.Budget(warmup_ms=args.warmup_ms, sample_ms=args.sample_ms),
        peaks_file=args.peaks, trials=args.trials, tune_minutes=args.tune_minutes,
        tuning_dir=args.tuning_dir)
    plan = runner.plan(config)
    from pwbench import console

    try:
        writer = console.run_with_progress(plan)
    except KeyboardInterrupt:
        print("pwbench: interrupted; every finished row is kept in the run directory", file=sys.stderr)
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
    failed = sum(math.isnan(r["median_s"]) for r in writer.rows)  # failed checks are never timed
    if failed:
        print(f"pwbench: {failed} kernel(s) failed their check or could not run (see the error column)",
              file=sys.stderr)
    return 1 if failed else 0


def cmd_tune(args) -> int:
    from pwbench.measure import runner

    runner.apply_threads(args.threads)  # the tuner's worker processes inherit TVM_NUM_THREADS
    from pwbench import tune_command

    return tune_command.run(runner.RunConfig(
        suite=args.suite, target=args.target, filter=args.filter, batch=args.batch,
        layout=args.layout, threads=args.threads, trials=args.trials,
        tune_minutes=args.tune_minutes, tuning_dir=args.tuning_dir))


def cmd_list(args) -> int:
    from pwbench import console

    console.listing(args.what)
    return 0


def cmd_env(args) -> int:
    from pwbench import env

    print(json.dumps(env.collect(os.cpu_count() or 1), indent=2))
    return 0


def cmd_peaks(args) -> int:
    from pwbench.measure import runner

    runner.apply_threads(args.threads)
    from pwbench import console, targets
    from pwbench.targets import peaks

    target = targets.resolve(args.target)
    targets.require_available(target)
    result = peaks.for_run(target, args.threads, refresh=args.refresh,
                           on_measure=lambda: console.console.print("measuring (a few seconds) ..."))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.peaks_summary(result)
    return 0


def cmd_report(args) -> int:
    from pwbench import report

    costs = report.costs.parse(args.machines, args.price, args.watts)
    built = report.build(args.runs, args.out, peaks_file=args.peaks, baseline=args.baseline,
                         costs=costs, print_tables=True)
    print(f"report: {built.index}")
    return 0


def cmd_compare(args) -> int:
    from pwbench.analysis import compare

    threshold = compare.parse_threshold(args.threshold)
    if args.against_history:
        from pwbench.store import history

        if len(args.runs) != 1:
            raise UserError(f"compare --against-history takes one NEW run directory, got {len(args.runs)}")
        db = args.db or history.default_path()
        result = history.compare_with_history(history.connect(db, create=False), args.runs[0],
                                              threshold, args.history_runs, str(db))
    elif len(args.runs) != 2:
        raise UserError(f"compare takes BASE and NEW run directories, got {len(args.runs)}")
    else:
        result = compare.compare_runs(args.runs[0], args.runs[1], threshold)
    if args.format == "table":
        compare.print_table(result, args.all)
    else:
        print(compare.to_markdown(result) if args.format == "md" else compare.to_json(result), end="")
        for warning in result.warnings:
            print(f"pwbench: warning: {warning}", file=sys.stderr)
    return 1 if result.regressions else 0


def cmd_history(args) -> int:
    from pwbench.store import history

    if args.history_command == "add":
        conn = history.connect(args.db)
        for run in args.runs:
            run_id, added = history.add(conn, run)
            print(f"{run}: {'recorded as' if added else 'already recorded as'} run {run_id}")
        return 0
    conn = history.connect(args.db, create=False)
    if args.layer:
        frame = history.trend(conn, args.layer, args.backend, args.fingerprint)
        if frame.empty:
            raise UserError(f"no recorded layer matches {args.layer!r}")
    else:
        frame = history.runs(conn)
        if args.fingerprint:
            frame = frame[frame["fingerprint"] == args.fingerprint]
    if args.format == "json":
        print(frame.to_json(orient="records", indent=2))
    else:
        history.print_table(frame, f"history: {args.layer}" if args.layer else "recorded runs")
    return 0


def cmd_export(args) -> int:
    from pwbench.store import export

    print(export.export(args.run, args.format, args.output))
    return 0


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return {"run": cmd_run, "tune": cmd_tune, "list": cmd_list, "env": cmd_env, "peaks": cmd_peaks,
                "report": cmd_report, "compare": cmd_compare,
                "history": cmd_history, "export": cmd_export}[args.command](args)
    except UserError as exc:
        print(f"pwbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
