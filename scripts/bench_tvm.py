"""The TVM figures of issue #5: torch vs tvm (untuned) vs tvm-tuned per layer, tuning seconds per
layer, geomean speedups per kind. Layers: 8 MobileNetV2 layers (4 pointwise, 4 depthwise, the
56x56 to 14x14 stages) and 4 ResNet-50 full 3x3 convs (one per stage).

    python scripts/bench_tvm.py                      # 64 trials, 2 threads (the issue's figures)
    python scripts/bench_tvm.py --quick              # 2 layers, 8 trials: checks the script works

Runs are ordinary `pwbench run` directories under --output (tuning_curves.csv included); the
tuning database is reused, so a second invocation only re-times (pass a fresh --tuning-dir to
tune again). Use a quiet machine: torch timings vary a lot when other work shares the cores.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from pwbench import cli

MOBILENETV2 = ["features.2.conv.2", "features.3-4.conv.0.0", "features.5-7.conv.0.0",
               "features.8-11.conv.0.0", "features.3.conv.1.0", "features.4.conv.1.0",
               "features.5-6.conv.1.0", "features.8-11.conv.1.0"]
RESNET50 = ["layer1.0-2.conv2", "layer2.1-3.conv2", "layer3.1-5.conv2", "layer4.1-2.conv2"]
QUICK = {"mobilenetv2": ["features.3.conv.1.0"], "resnet50": ["layer4.1-2.conv2"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW")
    parser.add_argument("--output", type=Path, default=Path("results/bench_tvm"))
    parser.add_argument("--tuning-dir", type=Path, help="tuning database root (default: cache dir)")
    parser.add_argument("--sample-ms", default="1000", help="sampling per kernel (default 1000)")
    parser.add_argument("--quick", action="store_true", help="2 layers, 8 trials")
    args = parser.parse_args()
    layers = QUICK if args.quick else {"mobilenetv2": MOBILENETV2, "resnet50": RESNET50}
    trials = 8 if args.quick else args.trials
    frames = []
    for suite, names in layers.items():
        out = args.output / f"{suite}_{args.layout.lower()}_{trials}trials"
        if not (out / "records.parquet").exists():
            argv = ["run", "--suite", suite, "--filter", f"layer in {names!r}", "--layout", args.layout,
                    "--backend", "torch,tvm,tvm-tuned", "--threads", str(args.threads),
                    "--trials", str(trials), "--sample-ms", args.sample_ms, "--output", str(out)]
            if args.tuning_dir:
                argv += ["--tuning-dir", str(args.tuning_dir)]
            if cli.main(argv) == 2:
                return 2
        frames.append(pd.read_parquet(out / "records.parquet"))
    print_figures(pd.concat(frames, ignore_index=True))
    return 0


def print_figures(rows: pd.DataFrame) -> None:
    wide = rows.pivot_table(index=["layer", "kind"], columns="backend", values="median_s",
                            aggfunc="first")
    tuned = rows[rows["backend"] == "tvm-tuned"].set_index("layer")
    table = pd.DataFrame({
        "torch_ms": wide["torch"] * 1e3, "tvm_ms": wide["tvm"] * 1e3,
        "tuned_ms": wide["tvm-tuned"] * 1e3,
        "tuned/torch": wide["torch"] / wide["tvm-tuned"],  # speedup: > 1 means tvm-tuned is faster
        "untuned/torch": wide["torch"] / wide["tvm"],
    }).reset_index()
    table["tuning_s"] = table["layer"].map(tuned["tuning_s"])
    table["tuning"] = table["layer"].map(tuned["tuning"])
    table["checks"] = table["layer"].map(rows.groupby("layer")["check"].agg(lambda c: ",".join(set(c))))
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.3g}".format):
        print("\nspeedups over torch (> 1: faster than torch); tuning_s from the tuning database")
        print(table.to_string(index=False))
        geo = table.groupby("kind")[["tuned/torch", "untuned/torch", "tuning_s"]].agg(geomean)
        print("\ngeomean per kind")
        print(geo.to_string())


def geomean(values: pd.Series) -> float:
    values = values.dropna()
    return math.exp(values.map(math.log).mean()) if len(values) and (values > 0).all() else math.nan


if __name__ == "__main__":
    sys.exit(main())
