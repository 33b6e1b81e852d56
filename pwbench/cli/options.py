"""Argument types and option groups that several commands share."""

from __future__ import annotations

import argparse
import os

from pwbench.argtypes import given_path, names, positive_float, positive_int  # noqa: F401 (shared)


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
