"""Argument types and option groups that several commands share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


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


def add_workload(parser, targets: str, threads: str) -> None:
    """What to run and where: shared by run and tune."""
    parser.add_argument("--target", default="cpu", help=f"{targets} (default: cpu)")
    parser.add_argument("--suite", default="default", help="a builtin suite name or a .toml path")
    parser.add_argument("--filter", help="pandas query over layer columns, e.g. \"kind == 'depthwise'\"")
    parser.add_argument("--batch", type=positive_int, help="override every layer's batch size")
    parser.add_argument("--layout", choices=("NCHW", "NHWC"), help="override every layer's layout")
    add_threads(parser, threads)


def add_threads(parser, what: str = "threads for every backend") -> None:
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                        help=f"{what} (default: all cores)")


def add_tuning(parser) -> None:
    parser.add_argument("--trials", type=positive_int, default=64,
                        help="tvm-tuned: MetaSchedule trials per layer (default 64)")
    parser.add_argument("--tune-minutes", type=positive_float, metavar="M",
                        help="tvm-tuned: stop tuning after M minutes for the whole suite")
    parser.add_argument("--tuning-dir", type=Path, metavar="DIR",
                        help="tuning database root, or one database (default: <cache dir>/tuning)")


def add_db(parser, default=None) -> None:
    parser.add_argument("--db", type=Path, default=default, metavar="PATH",
                        help="history database (default: $PWBENCH_HISTORY, else results/history.sqlite)")


def add_rpc(parser) -> None:
    """Boards behind a TVM RPC tracker: kernels built here, verified and timed there."""
    parser.add_argument("--rpc-tracker", metavar="HOST:PORT",
                        help="a TVM RPC tracker: kernels run on a board registered under --rpc-key")
    parser.add_argument("--rpc-key", metavar="KEY", help="the key the boards registered under "
                        "(`pwbench fleet --rpc-tracker HOST:PORT` lists them)")
    parser.add_argument("--rpc-session-timeout", type=positive_float, metavar="S",
                        help="seconds a board session may last, upload to last sample "
                             "(default 120); the board ends a longer one")


def rpc_endpoint(args):
    """The endpoint of the RPC options, None without them (UserError when half given)."""
    from pwbench.targets.board import endpoint

    return endpoint(getattr(args, "rpc_tracker", None), getattr(args, "rpc_key", None),
                    getattr(args, "rpc_session_timeout", None))
