"""`pwbench fleet`: boards behind a TVM RPC tracker.

    pwbench fleet [--rpc-tracker HOST:PORT]   the tracker's keys, with free and busy boards
    pwbench fleet local [--background]        start a tracker, an x86 board and an emulated
                                              aarch64 board (qemu) on 127.0.0.1; Ctrl-C stops them
    pwbench fleet local --stop                stop the local fleet (started here or elsewhere)

`pwbench run --fleet HOST:PORT` (cli/run.py) runs a suite on one board of every key, one run
directory per key, and ends with the hardware-selection report across them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pwbench.cli import signals
from pwbench.cli.options import given_path, nonnegative_int, port_number, positive_float


def add(sub):
    fl = sub.add_parser("fleet", help="list the boards of an RPC tracker, or start/stop a local fleet")
    fl.add_argument("what", nargs="?", choices=("list", "local"), default="list",
                    help="list (default): the tracker's keys and boards; local: a fleet on 127.0.0.1")
    fl.add_argument("--rpc-tracker", metavar="HOST:PORT",
                    help="the tracker to list (default: the local fleet's, else 127.0.0.1:9190)")
    fl.add_argument("--stop", action="store_true", help="local: stop the running local fleet")
    fl.add_argument("--port", type=port_number, default=9190, help="local: tracker port (default 9190)")
    fl.add_argument("--x86", type=nonnegative_int, default=1, metavar="N", help="local: x86 boards (default 1)")
    fl.add_argument("--aarch64", type=nonnegative_int, default=1, metavar="N",
                    help="local: emulated aarch64 boards under qemu (default 1; 0 for none)")
    fl.add_argument("--aarch64-runtime", type=given_path, metavar="DIR",
                    help="local: the aarch64 Python + TVM made by scripts/setup_aarch64_runtime.sh "
                         "(default: $PWBENCH_AARCH64_RUNTIME, else <cache>/aarch64-runtime)")
    fl.add_argument("--qemu-cpu", metavar="CPU", help="local: the CPU qemu emulates (default max: "
                    "NEON, SVE, SVE2; e.g. cortex-a72 for a board without SVE)")
    fl.add_argument("--minutes", type=positive_float, default=240.0,
                    help="local: every process ends after this long, whatever happens (default 240)")
    fl.add_argument("--background", action="store_true",
                    help="local: return once the boards are registered (stop with --stop)")
    fl.add_argument("--state-file", type=given_path, help=argparse.SUPPRESS)  # tests: a fleet of their own
    return fl


def main(args) -> int:
    if args.what == "local":
        if args.x86 + args.aarch64 == 0 and not args.stop:
            from pwbench.errors import UserError

            raise UserError("--x86 0 --aarch64 0 would start a tracker with no board: give at "
                            "least one")
        return _local(args)
    return _list(args)


# ---- listing ------------------------------------------------------------------------------------
def tracker_address(given: str | None, state_file: Path | None = None) -> tuple[str, int]:
    from pwbench.targets import local_fleet
    from pwbench.targets.board import parse_address

    if given:
        return parse_address(given)
    running = local_fleet.Fleet.load(state_file or local_fleet.default_state_file())
    if running and running.alive():
        return local_fleet.HOST, running.tracker_port
    return local_fleet.HOST, local_fleet.DEFAULT_PORT


def _list(args) -> int:
    from rich.markup import escape
    from rich.table import Table

    from pwbench.cli.console import console
    from pwbench.errors import UserError
    from pwbench.tvm_bridge import rpc

    host, port = tracker_address(args.rpc_tracker, args.state_file)
    try:
        keys = rpc.fleet(host, port)
    except rpc.BoardError as exc:
        raise UserError(str(exc)) from None
    table = Table(title=f"RPC tracker {host}:{port}", title_justify="left")
    for col in ("key", "boards", "free", "busy", "waiting requests"):
        table.add_column(col, justify="left" if col == "key" else "right")
    for key, c in keys.items():
        table.add_row(escape(key), str(c["total"]), str(c["free"]), str(c["busy"]), str(c["pending"]))
    console.print(table)
    if not keys:
        console.print("no board is registered with this tracker")
    return 0


# ---- the local fleet ----------------------------------------------------------------------------
def _local(args) -> int:
    from pwbench.cli.console import console
    from pwbench.targets import local_fleet

    state_file = args.state_file or local_fleet.default_state_file()
    if args.stop:
        running = local_fleet.Fleet.load(state_file)
        if running is None or not running.alive():
            console.print("no local fleet is running")
            if running is not None:
                running.stop()  # clears a stale state file
            return 0
        stopped = running.stop()
        console.print(f"stopped the local fleet (tracker {running.tracker}): {', '.join(stopped)}")
        return 0
    runtime = local_fleet.aarch64_runtime(args.aarch64_runtime)
    if args.aarch64:
        problem = local_fleet.aarch64_problem(runtime)
        if problem:  # before anything starts
            from pwbench.errors import UserError

            raise UserError(f"the emulated aarch64 board cannot start: {problem} "
                            "(or --aarch64 0 for x86 boards only)")
    fleet = local_fleet.new(state_file, args.minutes * 60)
    try:
        start = time.monotonic()
        fleet.start_tracker(args.port)
        for _ in range(args.x86):
            fleet.start_server(local_fleet.X86_KEY)
        for _ in range(args.aarch64):
            fleet.start_aarch64(runtime, qemu_cpu=args.qemu_cpu)
        want = {k: n for k, n in ((local_fleet.X86_KEY, args.x86),
                                  (local_fleet.AARCH64_KEY, args.aarch64)) if n}
        with console.status("waiting for the boards to register (an emulated one takes 15-40 s)"):
            fleet.wait(want)
        console.print(f"local fleet up in {time.monotonic() - start:.0f} s: tracker {fleet.tracker}, "
                      + ", ".join(f"{n} board(s) under key {k!r}" for k, n in want.items())
                      + f"; logs in {fleet.log_dir}")
        console.print(f"  pwbench fleet --rpc-tracker {fleet.tracker}\n"
                      f"  pwbench run --fleet {fleet.tracker} --suite default --backend tvm\n"
                      f"  pwbench run --target arm --rpc-tracker {fleet.tracker} "
                      f"--rpc-key {local_fleet.AARCH64_KEY} --backend tvm")
        if args.background:
            console.print("running in the background; stop it with `pwbench fleet local --stop`")
            return 0
        console.print("Ctrl-C stops it")
        while fleet.alive():
            time.sleep(1)
        console.print("the local fleet stopped (--stop, or its --minutes passed)")
        fleet.stop()
        return 0
    except KeyboardInterrupt as stop:
        stopped = fleet.stop()
        console.print(f"stopped the local fleet: {', '.join(stopped)}")
        return signals.exit_status(stop)
    except BaseException:
        fleet.stop()
        raise
