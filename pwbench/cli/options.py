"""Argument types and option groups that several commands share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pwbench.argtypes import names, positive_float, positive_int  # noqa: F401 (shared)


def port_number(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (1-65535), got {text!r}")
    return value


def nonempty(text: str) -> str:
    """A name that must be given in full: an empty --suite ran the default suite without a word."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name, got an empty one")
    return text


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {text!r}")
    return value


def given_path(text: str) -> Path:
    """A file or directory named on the command line; '' would be the current folder (an
    --output '' wrote a run into it), never what was meant."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty name")
    return Path(text)


TRIALS = 64  # the default trials per layer (pwbench run's first look uses fewer)


def add_workload(parser, targets: str, threads: str) -> None:
    """What to run and where: shared by run and tune."""
    parser.add_argument("--target", default="cpu", help=f"{targets} (default: cpu)")
    parser.add_argument("--suite", default="default", type=nonempty,
                        help="a builtin suite name or a .toml path")
    parser.add_argument("--filter", metavar="CONDITION",
                        help="which layers: a condition over their columns, e.g. \"kind == "
                             "'depthwise' and stride == 2\" (parsed, never run as code)")
    parser.add_argument("--batch", type=positive_int, help="override every layer's batch size")
    parser.add_argument("--layout", choices=("NCHW", "NHWC", "NCHW,NHWC"),
                        metavar="NCHW|NHWC|NCHW,NHWC",  # argparse would show {NCHW,NHWC,NCHW,NHWC}
                        help="override every layer's layout; NCHW,NHWC: each layer in both")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                        help="override every layer's dtype")
    add_threads(parser, threads)


def add_threads(parser, what: str = "threads for every backend") -> None:
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                        help=f"{what} (default: all cores)")


def add_tuning(parser) -> None:
    parser.add_argument("--trials", type=positive_int, default=None,
                        help=f"tvm-tuned: MetaSchedule trials per layer (default {TRIALS})")
    parser.add_argument("--tune-minutes", type=positive_float, metavar="M",
                        help="tvm-tuned: stop tuning after M minutes for the whole suite")
    parser.add_argument("--tuning-dir", type=given_path, metavar="DIR",
                        help="tuning database root, or one database (default: <cache dir>/tuning)")
    parser.add_argument("--space", type=names, default=("structured",), metavar="S[,S]",
                        help="tvm-tuned design space(s): structured (default), default "
                             "(MetaSchedule's own), or both (one row each)")
    parser.add_argument("--tuning", default="suite", metavar="suite|layer", dest="tuning_mode",
                        help="tvm-tuned: tune the run's layers as one task set (suite, default) "
                             "or one layer at a time (layer)")


def add_db(parser, default=None) -> None:
    parser.add_argument("--db", type=given_path, default=default, metavar="PATH",
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
