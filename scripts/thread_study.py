"""Why torch's per-call times at 2 threads are bimodal on a 2-core VM: the same conv measured in
fresh processes under different OpenMP settings, side by side.

Each configuration runs `--processes` fresh Python processes; each process times single calls of
one torch conv (default: the 64->256 1x1 conv at 56x56 of ResNet-50) for `--seconds` after a
warm-up and prints its median, its fastest call, and the share of calls over twice the fastest
("slow"). Configurations are interleaved (process 1 of every configuration, then process 2, ...)
so a machine that drifts affects them all alike.

    python scripts/thread_study.py [--threads 2] [--processes 5] [--seconds 1]

Configurations: torch's defaults (GNU OpenMP: threads spin for a while after a parallel region,
then sleep); OMP_WAIT_POLICY=PASSIVE (sleep at once) and ACTIVE (spin); a busy Python thread
beside the kernel (a neighbour that keeps one core occupied); 1 thread, for scale. Run it on a
quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, os, sys, threading, time
threads, seconds, busy = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1"
import torch
torch.set_num_threads(threads)
x = torch.rand(1, 64, 56, 56)
w = torch.rand(256, 64, 1, 1)
if busy:
    stop = False
    def spin():
        while not stop:
            pass
    threading.Thread(target=spin, daemon=True).start()
with torch.inference_mode():
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        torch.nn.functional.conv2d(x, w)
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.nn.functional.conv2d(x, w)
        samples.append(time.perf_counter() - start)
print(json.dumps(samples))
"""

CONFIGS = {
    "torch defaults": ({}, False),
    "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, False),
    "OMP_WAIT_POLICY=ACTIVE": ({"OMP_WAIT_POLICY": "ACTIVE"}, False),
    "a busy thread beside it": ({}, True),
}


def one(env: dict, busy: bool, threads: int, seconds: float) -> list[float]:
    full = {**os.environ, "OMP_NUM_THREADS": str(threads), **env}
    for var in ("OMP_WAIT_POLICY",):
        if var not in env:
            full.pop(var, None)
    out = subprocess.run([sys.executable, "-c", WORKER, str(threads), str(seconds), "1" if busy else "0"],
                         capture_output=True, text=True, env=full, check=True).stdout
    return json.loads(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    configs = dict(CONFIGS) | {"1 thread (for scale)": ({}, False)}
    results = {name: [] for name in configs}
    for p in range(args.processes):
        for name, (env, busy) in configs.items():
            threads = 1 if name.startswith("1 thread") else args.threads
            results[name].append(one(env, busy, threads, args.seconds))
        print(f"round {p + 1}/{args.processes} done", file=sys.stderr, flush=True)
    print(f"torch conv 64->256 1x1 at 56x56, {args.threads} threads, {args.processes} fresh processes "
          f"per configuration, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'configuration':28} {'process medians (ms)':>44} {'fastest':>8} {'slow calls':>10}")
    for name, runs in results.items():
        medians = " ".join(f"{statistics.median(r) * 1e3:6.3f}" for r in runs)
        fastest = min(min(r) for r in runs)
        slow = sum(sum(s > 2 * fastest for s in r) for r in runs) / sum(len(r) for r in runs)
        print(f"{name:28} {medians:>44} {fastest * 1e3:7.3f} {slow:>10.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
