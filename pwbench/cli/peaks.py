"""`pwbench peaks`: measured peak FLOP/s and memory bandwidth of a target (cached)."""

from __future__ import annotations

import json

from pwbench.cli.options import add_rpc, add_threads, rpc_endpoint


def add(sub):
    pk = sub.add_parser("peaks", help="measure peak FLOP/s and memory bandwidth (cached per machine)")
    pk.add_argument("--target", default="cpu",
                    help="cpu or cuda; with --rpc-tracker a board's (cpu, arm, an ARM core) (default: cpu)")
    add_threads(pk, "threads")
    pk.add_argument("--refresh", action="store_true", help="measure again even when cached")
    pk.add_argument("--json", action="store_true", help="print the peaks as JSON")
    add_rpc(pk)
    return pk


def main(args) -> int:
    from pwbench import targets

    target = targets.resolve(args.target, rpc_endpoint(args))
    target.prepare_process(args.threads)
    targets.require_runnable(target)
    from pwbench.cli import console
    from pwbench.targets import peaks

    result = peaks.for_run(target, args.threads, refresh=args.refresh,
                           on_measure=lambda: console.console.print(
                               f"measuring (a few seconds, {peaks.cache_note()}) ..."))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.peaks_summary(result)
    return 0
