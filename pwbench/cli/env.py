"""`pwbench env`: the environment and hardware a run on a target records."""

from __future__ import annotations

import json
import os

from pwbench.cli.options import add_rpc, rpc_endpoint


def add(sub):
    env = sub.add_parser("env", help="print the environment metadata a run records")
    env.add_argument("--target", default="cpu", help="whose hardware facts to show (default: cpu)")
    add_rpc(env)
    return env


def main(args) -> int:
    from pwbench import env, targets

    target = targets.resolve(args.target, rpc_endpoint(args))  # a board's facts: from the board
    print(json.dumps(env.collect(os.cpu_count() or 1) | target.facts(), indent=2, default=str))
    return 0
