"""What a tail tile costs: the structured space tiles an output row of any width, its last tile a
tail when the tile width does not divide the row (tvm_bridge/spaces). This times one conv shape
at output widths that a tile divides and at prime widths next to them, with the same knobs
(channel blocks, structure, tile width), and prints GFLOP/s: a tail that costs nothing keeps the
rate of its neighbours. 3x3 and 1x1 convs, 64 -> 64 channels, rows as tall as wide, for this
CPU (or --target), 2 threads, the median of interleaved rounds of TVM's time_evaluator.

    python scripts/tail_study.py
    python scripts/tail_study.py --target '{"kind": "llvm", "mcpu": "haswell"}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from pwbench import targets
from pwbench.tvm_bridge import layers, spaces
from pwbench.workloads.spec import ConvSpec

WIDTHS = {8: (16, 17, 18), 7: (28, 29, 35), 6: (12, 13, 18)}  # tile width: widths around a prime


def rates(target_name: str, threads: int, rounds: int) -> None:
    target = targets.resolve(target_name)
    target.prepare_process(threads)  # TVM's pool takes TVM_NUM_THREADS when it starts
    chain = target.toolchain(threads)
    lanes = spaces.tasks(ConvSpec(1, 64, 64, 8, 8), chain.target)[0].lanes
    print(f"target {json.dumps(chain.target)}, {lanes} fp32 lanes, {threads} threads, "
          f"{rounds} rounds")
    for kernel in (3, 1):
        for reg_n, widths in WIDTHS.items():
            found = {w: [] for w in widths}
            for _ in range(rounds):
                for width in widths:
                    spec = ConvSpec(1, 64, 64, width, width, kernel, 1, kernel // 2)
                    task = spaces.tasks(spec, chain.target)[0]
                    schedule = spaces.fixed(task, task.structures[0], reg_n)
                    found[width].append(spec.flops / layers.time_here(schedule, chain) / 1e9)
            cells = ", ".join(f"W={w}{' (tail)' if w % reg_n else ''}: "
                              f"{statistics.median(r):.0f}" for w, r in found.items())
            print(f"{kernel}x{kernel} 64->64, tile {reg_n} columns: {cells} GFLOP/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rates(args.target, args.threads, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
