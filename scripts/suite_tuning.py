"""How to tune: layer at a time vs suite-wide, default vs structured space, and the search
settings of the structured spaces, measured with --repeats fresh tuning databases per cell.
Prints, per cell, the tuning wall seconds per layer (median and range over repeats, worker
start included) and the kernels found: the geomean over layers of each layer's best kernel,
re-timed (time_evaluator, min of 10), relative to the best any cell found for that layer
(1.00 = as good as the best). The defaults of pwbench/tvm_bridge/tuner.Settings come from it.

    python scripts/suite_tuning.py                         # modes x spaces, 4 layers, 64 trials
    python scripts/suite_tuning.py --grid settings         # structured, suite-wide: batch, cost model
    python scripts/suite_tuning.py --grid search           # default space: batch, population, flush
    python scripts/suite_tuning.py --quick                 # 2 layers, 4 trials, 1 repeat: checks it works

Run it on a quiet machine; it prints the load average before and after each cell.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from pwbench import targets
from pwbench.tvm_bridge import layers, tuner, tuning
from pwbench.tvm_bridge.database import Database
from pwbench.workloads.spec import ConvSpec

LAYERS = [ConvSpec(1, 24, 144, 56, 56, name="mb2 pw 24->144 @56"),
          ConvSpec(1, 144, 144, 56, 56, 3, 1, 1, groups=144, name="mb2 dw 144 @56"),
          ConvSpec(1, 64, 64, 56, 56, 3, 1, 1, name="r50 3x3 64 @56"),
          ConvSpec(1, 256, 256, 14, 14, 3, 1, 1, name="r50 3x3 256 @14")]
MODES = [("layer", "default", {}), ("suite", "default", {}),
         ("layer", "structured", {}), ("suite", "structured", {})]
SETTINGS = [("suite", "structured", dict(enum_batch=b, cost_model=c))
            for b in (2, 4, 8) for c in ("none", "xgb")]
SEARCH = [("layer", "default", dict(batch=b, population=p, cache_flush=f))
          for b, p, f in ((32, 512, False), (16, 512, False), (64, 512, False), (32, 2048, False),
                          (32, 512, True))]


def tune_cell(mode, space, settings, specs, trials, threads, root: Path) -> tuple[float, dict]:
    """Seconds of wall time for the whole tuning, and each layer's best re-timed seconds."""
    cpu = targets.resolve("cpu")
    chain = cpu.toolchain(threads)
    db = Database(root, chain.target, cpu.tuning_facts())
    session = tuning.Session(db, chain, threads, dataclasses.replace(tuner.Settings(), **settings))
    budget = tuning.Budget(trials)
    plans = {spec.id: layers.plan(spec, chain, space) for spec in specs}
    jobs = [layers.job(spec, plans[spec.id]) for spec in specs]
    start = time.monotonic()
    for chosen in ([jobs] if mode == "suite" else [[job] for job in jobs]):
        session.tune(chosen, budget)
    wall = time.monotonic() - start
    session.close()
    return wall, {spec.label: layers.time_here(layers.best(spec, db, plans[spec.id]).schedule, chain)
                  for spec in specs}


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=("modes", "settings", "search"), default="modes")
    parser.add_argument("--trials", type=int, default=64, help="trials per layer")
    parser.add_argument("--layers", type=int, default=len(LAYERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 layers, 4 trials, 1 repeat")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    specs = LAYERS[:2] if args.quick else LAYERS[:args.layers]
    trials, repeats = (4, 1) if args.quick else (args.trials, args.repeats)
    cells = {"modes": MODES, "settings": SETTINGS, "search": SEARCH}[args.grid]
    results = {}
    for cell in cells:
        mode, space, settings = cell
        for r in range(repeats):
            root = Path(tempfile.mkdtemp(prefix="suite_tuning_"))
            before = load()
            wall, best = tune_cell(mode, space, settings, specs, trials, args.threads, root)
            shutil.rmtree(root, ignore_errors=True)
            results.setdefault(_name(cell), []).append((wall, best))
            print(f"{_name(cell):45s} repeat {r + 1}: {wall:7.1f} s ({before} -> {load()})",
                  flush=True)
    fastest = {s.label: min(b[s.label] for runs in results.values() for _, b in runs)
               for s in specs}
    print(f"\n{len(specs)} layers, {trials} trials per layer, {repeats} repeat(s) per cell, "
          f"{args.threads} threads")
    print(f"{'cell':45s} {'s/layer median':>15s} {'range':>15s} {'kernels found':>14s}")
    for name, runs in results.items():
        per_layer = [wall / len(specs) for wall, _ in runs]
        quality = statistics.median(_geomean([fastest[k] / v for k, v in best.items()])
                                    for _, best in runs)
        print(f"{name:45s} {statistics.median(per_layer):15.1f} "
              f"{min(per_layer):7.1f}-{max(per_layer):<7.1f} {quality:14.2f}")
    print("kernels found: geomean over layers of (best any cell found / this cell's best), "
          "median over repeats; 1.00 = as fast as the best")


def _name(cell) -> str:
    mode, space, settings = cell
    extra = ",".join(f"{k}={v}" for k, v in settings.items())
    return f"{mode:5s} {space:10s} {extra}".strip()


def _geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


if __name__ == "__main__":
    main()
