"""`pwbench run`: benchmark a suite, verify then time every kernel, in several processes.

With no --suite, the run is the first look at what pwbench is for: the default suite in NCHW and
NHWC, torch (eager and pre-packed) and tvm-tuned side by side under a small tuning budget, with
short measurements (FIRST_LOOK), ending with both speedups per kind. Every setting of it can be
given, and a named suite gets the full defaults (torch only, 3 processes, 400 ms per kernel)."""

from __future__ import annotations

import sys
from pathlib import Path

from pwbench.backends.tuning_options import TuningOptions
from pwbench.cli import signals
from pwbench.cli.options import (add_db, add_rpc, add_workload, given_path, positive_float,
                                 positive_int, rpc_endpoint)
from pwbench.errors import UserError

# `pwbench run` without --suite: what its defaults are (see the module docstring and README)
FIRST_LOOK = {"backend": "torch,torch-frozen,onnxruntime,tvm-tuned", "processes": 2, "warmup_ms": 20.0,
              "sample_ms": 100.0, "trials": 8, "tune_minutes": 1.5}
FULL = {"backend": "torch", "processes": None, "warmup_ms": 50.0, "sample_ms": 400.0,
        "trials": None, "tune_minutes": None}  # None: the backend's own default
OPTIONAL = ("onnxruntime", "tvm-tuned")  # left out with one line when this machine cannot run them


def add(sub):
    from pwbench.measure import instructions
    from pwbench.pipeline.runner import DEFAULT_PROCESSES

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
    run.add_argument("--cuda-graphs", action="store_true",
                     help="--target cuda: replay each timed block of calls from a CUDA graph "
                          "(no host dispatch between kernels; clock cuda-graph)")
    run.add_argument("--peaks", type=given_path, metavar="FILE",
                     help="peak FLOP/s and bytes/s from a TOML/JSON file instead of measured ones")
    run.add_argument("--report", action="store_true", help="write RUN_DIR/report/index.html at the end")
    run.add_argument("--record", action="store_true", help="add the run to the history database (--db)")
    add_db(run)
    TuningOptions.add_arguments(run)
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
        return _fleet(args)
    from pwbench.cli import console

    config = config_of(args)
    history_db = _history(args)  # a bad --db fails now, not after everything was measured
    try:
        writer = run_suite(config, first_look=settings(args)[1])
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM, SIGHUP (cli/signals.py)
        kept = (f"; every finished measurement is kept in {config.output}"
                if config.output and config.output.exists() else "")
        print(f"pwbench: {signals.what(stop)}{kept}", file=sys.stderr)
        return signals.exit_status(stop)
    console.speedups(writer.rows)
    print(f"results: {writer.dir}")
    if history_db is not None:
        from pwbench.store import history

        run_id, _ = history.add(history_db, writer.dir)
        print(f"recorded in {args.db or history.default_path()} as run {run_id}")
    if args.report:
        from pwbench import report

        print(f"report: {report.build([writer.dir], writer.dir / 'report').index}")
    return _exit_status(_failed(writer.rows))


def run_suite(config, first_look: bool = False):
    """The one way a suite runs on a target (a plain run, each key of a fleet): planned and
    checked, measured with a progress bar, summarised. Returns the run's writer."""
    from pwbench.cli import console
    from pwbench.pipeline import runner

    watch = console.RunProgress()
    plan = runner.plan(config, watch)
    if first_look:
        console.console.print(
            f"first look: suite default, {', '.join(plan.backends)}, {plan.config.processes} "
            f"processes, {config.budget.sample_ms:.0f} ms per kernel, "
            f"{config.backend_options[TuningOptions.group].trials} tuning "
            "trials per layer (give --suite for the full settings)")
    writer = watch.run(plan)
    console.summary(writer.rows)
    return writer


def _failed(rows) -> int:
    from pwbench.store import results

    return sum(results.failed(r) for r in rows)  # failed checks are never timed


def _exit_status(failed: int) -> int:
    if failed:
        print(f"pwbench: {failed} kernel(s) failed their check or could not run (see the error "
              "column)", file=sys.stderr)
    return 1 if failed else 0


def _history(args):
    """The history database --record will add the run to, opened (and checked) before the run."""
    if not args.record:
        return None
    from pwbench.store import history

    return history.connect(args.db)


def config_of(args, **override):
    """The RunConfig of `pwbench run`'s arguments (fields in `override` replace them)."""
    from pwbench.measure import timing
    from pwbench.pipeline import runner
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
        backend_options={TuningOptions.group: TuningOptions.from_args(
            args, trials=chosen["trials"], tune_minutes=chosen["tune_minutes"])},
        optional=OPTIONAL if args.backend is None else (), clock=args.clock, calls=args.calls,
        rpc=rpc_endpoint(args), cuda_graphs=getattr(args, "cuda_graphs", False))
    fields.update(override)
    return runner.RunConfig(**fields)


# ---- pwbench run --fleet ------------------------------------------------------------------------
def _fleet(args) -> int:
    """One run per key of the tracker (on one board of each), then the selection report."""
    from pwbench.cli import console
    from pwbench.errors import UserError

    host, port, keys = _fleet_keys(args)
    root = args.output or Path("results") / f"{_stamp()}_{Path(args.suite or 'default').stem}_fleet"
    console.console.print(f"fleet {host}:{port}: {len(keys)} key(s): {', '.join(keys)}; runs under "
                          f"{root}")
    done, problems, failed = [], [], 0
    for key in keys:
        config = config_of(args, output=root / _safe(key), rpc=_endpoint(args, host, port, key),
                           backends=tuple(b.strip() for b in (args.backend or "tvm").split(",")
                                          if b.strip()))
        console.console.rule(f"key {key}")
        try:
            writer = run_suite(config)
        except UserError as exc:  # this key's boards cannot be used: say so, go on
            problems.append(f"key {key}: {exc}")
            console.warn(f"key {key}: {exc}")
            continue
        except KeyboardInterrupt as stop:
            print(f"pwbench: {signals.what(stop)}; every finished run is kept", file=sys.stderr)
            return signals.exit_status(stop)
        failed += _failed(writer.rows)
        done.append(writer.dir)
    if not done:
        raise UserError("no key of the fleet could be measured: " + "; ".join(problems))
    _fleet_report(done, root)
    if problems:
        print(f"pwbench: {len(problems)} key(s) not measured", file=sys.stderr)
    return max(_exit_status(failed), 1 if problems else 0)


def _fleet_keys(args) -> tuple[str, int, list[str]]:
    """The tracker of --fleet and its keys with boards, every option checked first."""
    from pwbench.errors import UserError
    from pwbench.targets.board import parse_address
    from pwbench.tvm_bridge import rpc

    if args.rpc_tracker or args.rpc_key:
        raise UserError("--fleet runs on every key of its tracker: drop --rpc-tracker / --rpc-key")
    if args.target != "cpu":
        raise UserError("--fleet takes each board's target from what the board says it is: "
                        "drop --target (or run one key with --target T --rpc-key KEY)")
    host, port = parse_address(args.fleet, "--fleet")
    try:
        keys = [k for k, c in rpc.fleet(host, port).items() if c["total"]]
    except rpc.BoardError as exc:
        raise UserError(str(exc)) from None
    if not keys:
        raise UserError(f"no board is registered with the RPC tracker {host}:{port}")
    _check_backends(args, _endpoint(args, host, port, keys[0]))
    return host, port, keys


def _check_backends(args, endpoint) -> None:
    """Every backend asked must run on a board (torch does not run through RPC): one line."""
    from pwbench import backends, targets

    board = targets.resolve("cpu", endpoint)
    for name in (args.backend or "tvm").split(","):
        if name.strip():
            backends.backend_class(name.strip(), board)


def _endpoint(args, host: str, port: int, key: str):
    from pwbench.targets.board import Endpoint

    return Endpoint(host, port, key, args.rpc_session_timeout or Endpoint.session_timeout_s)


def _fleet_report(done: list, root: Path) -> None:
    from pwbench import report
    from pwbench.cli import console

    built = report.build(done, root / "report", show=console.console.print)
    for warning in built.warnings:
        console.warn(warning)
    print(f"runs: {', '.join(str(d) for d in done)}")
    print(f"report: {built.index}")


def _stamp() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in key)[:60] or "key"
