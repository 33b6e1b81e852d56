"""The block figures of issue #13: per block kind of suites/blocks.toml at 2 threads, torch eager,
onnxruntime, TVM Relax untuned and tuned (64 trials per task), each block whole and the sum of
its layers measured alone on the same backend; geomean speedups over torch and over
onnxruntime; and whether the depthwise-separable saving (1/C_out + 1/k^2 of the full conv's
FLOPs) survives better at block level than layer by layer.

    python scripts/bench_blocks.py                  # the issue's figures (tunes what the database lacks)
    python scripts/bench_blocks.py --quick          # the separable block only, 4 trials: checks the script

Two ordinary `pwbench run` directories under --output: every backend with the environment as it
is, and torch alone again with OMP_WAIT_POLICY=PASSIVE (torch's GNU OpenMP threads spin after
each parallel region; on a loaded 2-core machine a spinning thread that loses its core costs a
scheduler slice, and torch's times jump to multiples of it). The figures are what `pwbench report`
computes (pwbench/report/fusion.py, theory.py). The load average before and after is printed:
the machine is shared, say how loaded it was.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from pwbench.report import fusion, runs, theory

BACKENDS = ("torch", "onnxruntime", "tvm-relax", "tvm-relax-tuned")
PASSIVE = "torch (OMP passive)"
QUICK_FILTER = "layer.startswith('mobilenetv1.conv8')"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64, help="MetaSchedule trials per task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("results/bench_blocks"))
    parser.add_argument("--tuning-dir", type=Path, help="tuning database root (default: cache dir)")
    parser.add_argument("--sample-ms", default="1000", help="sampling per kernel and process")
    parser.add_argument("--quick", action="store_true", help="the separable block only, 4 trials")
    args = parser.parse_args()
    trials = 4 if args.quick else args.trials
    print(f"load before: {_load()}", flush=True)
    common = ["--suite", "blocks", "--threads", str(args.threads), "--sample-ms", args.sample_ms,
              *(["--filter", QUICK_FILTER] if args.quick else [])]
    main_run = args.output / f"blocks_{trials}trials"
    passive_run = args.output / "blocks_torch_omp_passive"
    tuning = ["--tuning-dir", str(args.tuning_dir)] if args.tuning_dir else []
    _pwbench(main_run, [*common, "--backend", ",".join(BACKENDS), "--trials", str(trials), *tuning])
    _pwbench(passive_run, [*common, "--backend", "torch"], {"OMP_WAIT_POLICY": "PASSIVE"})
    print(f"load after: {_load()}\n")
    (run,) = runs.load([main_run])
    (passive,) = runs.load([passive_run])
    print_figures(run, passive)
    return 0


def _pwbench(out: Path, argv: list[str], env: dict | None = None) -> None:
    if (out / "records.parquet").exists():
        print(f"reusing {out}")
        return
    command = [str(Path(sys.executable).parent / "pwbench"), "run", *argv, "--output", str(out)]
    print("$", " ".join(f"{k}={v}" for k, v in (env or {}).items()), " ".join(command[1:]), flush=True)
    code = subprocess.run(command, env=os.environ | (env or {})).returncode
    if code not in (0, 1):  # 1: some kernel failed its check or could not run; shown below
        sys.exit(code)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min) on {os.cpu_count()} cores"


def print_figures(run, passive) -> None:
    gains = pd.concat([fusion.gains(run), fusion.gains(passive).assign(backend=PASSIVE)])
    order = [b for b in (BACKENDS[0], PASSIVE, *BACKENDS[1:]) if b in set(gains["backend"])]
    block = gains.pivot(index=["block", "kind"], columns="backend", values="block_s")[order]
    layers = gains.pivot(index=["block", "kind"], columns="backend", values="layers_s")[order]
    with pd.option_context("display.width", 250, "display.max_columns", 30,
                           "display.float_format", "{:.3g}".format):
        print("Block whole, median ms (per call, pooled over processes):")
        print((block * 1e3).to_string())
        print("\nSum of the block's layers measured alone, ms:")
        print((layers * 1e3).to_string())
        print("\nFusion gain = sum of layers / block (> 1: the block gains from running whole):")
        print((layers / block).to_string())
        print("\nGeomean speedup of block times (> 1: faster than the reference backend):")
        rows = {b: {f"over {ref}": geomean(block[ref] / block[b]) for ref in ("torch", "onnxruntime")}
                for b in order}
        print(pd.DataFrame(rows).T.to_string())
        print("\nGeomean speedup of the sums of layers:")
        rows = {b: {f"over {ref}": geomean(layers[ref] / layers[b]) for ref in ("torch", "onnxruntime")}
                for b in order}
        print(pd.DataFrame(rows).T.to_string())
        tuned = run.records[(run.records["backend"] == "tvm-relax-tuned")
                            & (run.records["part_of"].fillna("") == "")]
        if not tuned.empty:
            print("\ntvm-relax-tuned blocks: tasks, trials per task, tuning seconds, PrimFuncs scheduled")
            print(tuned.set_index("layer")[["tuning_tasks", "tuning_trials", "tuning_s",
                                            "tuned_primfuncs", "tuning"]].to_string())
        pairs = pd.concat([theory.pairs(run), theory.pairs(passive).assign(backend=PASSIVE)])
        sep = pairs[pairs["block"] == "depthwise-separable"]
        print("\nDepthwise-separable vs the full conv it replaces: FLOP ratio (= 1/C_out + 1/k^2) and "
              "time ratios, block whole and layer by layer (lower: more saved):")
        print(sep[["pair", "backend", "flop_ratio", "seed_formula", "time_ratio", "layers_time_ratio",
                   "saving_kept_pct", "layers_saving_kept_pct"]].to_string(index=False))
        others = pairs[pairs["block"] != "depthwise-separable"]
        print("\nThe other blocks vs the full conv they replace (params and FLOP ratios, time ratios):")
        print(others[["pair", "block", "backend", "params_ratio", "flop_ratio", "time_ratio",
                      "layers_time_ratio"]].to_string(index=False))
    checks = run.records.groupby(["backend", "check"]).size()
    print(f"\nchecks: {checks.to_dict()}")


def geomean(values: pd.Series) -> float:
    values = values.dropna()
    return math.exp(values.map(math.log).mean()) if len(values) and (values > 0).all() else math.nan


if __name__ == "__main__":
    sys.exit(main())
