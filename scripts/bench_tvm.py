"""The TVM figures of issue #16: per layer, TVM tuned vs torch's strongest, like for like (the same
layout in and out) and best vs best (each stack's fastest verified NCHW or NHWC row), geomean per
kind, tuning seconds per layer and % of roofline of the best kernel. Layers: 8 MobileNetV2
layers (4 pointwise, 4 depthwise, the 56x56 to 14x14 stages) and 4 ResNet-50 full 3x3 convs (one
per stage), each in NCHW and NHWC; backends torch (eager), torch-frozen (weight pre-packed for
oneDNN) and tvm-tuned (its variants: the space, and blocked end to end, shown, never counted).

    python scripts/bench_tvm.py                              # structured space, suite-wide, 64 trials
    python scripts/bench_tvm.py --space default --tuning layer   # before: the default space
    python scripts/bench_tvm.py --space structured,default   # both spaces in one run
    python scripts/bench_tvm.py --quick                      # 2 layers, 8 trials: checks it works

Runs are ordinary `pwbench run` directories under --output; the tuning database is reused, so
a second invocation only re-times (give a fresh --tuning-dir to tune again, which is how the
tuning seconds are measured). Use a quiet machine: torch at 2 threads is bimodal under load.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from pwbench import cli
from pwbench.report import speedups

MOBILENETV2 = ["features.2.conv.2", "features.3-4.conv.0.0", "features.5-7.conv.0.0",
               "features.8-11.conv.0.0", "features.3.conv.1.0", "features.4.conv.1.0",
               "features.5-6.conv.1.0", "features.8-11.conv.1.0"]
RESNET50 = ["layer1.0-2.conv2", "layer2.1-3.conv2", "layer3.1-5.conv2", "layer4.1-2.conv2"]
QUICK = {"mobilenetv2": ["features.3.conv.1.0"], "resnet50": ["layer4.1-2.conv2"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--space", default="structured", help="structured, default, or both")
    parser.add_argument("--tuning", default="suite", help="suite (one task set) or layer")
    parser.add_argument("--output", type=Path, default=Path("results/bench_tvm"))
    parser.add_argument("--tuning-dir", type=Path, help="tuning database root (default: cache dir)")
    parser.add_argument("--sample-ms", default="1000", help="sampling per kernel (default 1000)")
    parser.add_argument("--processes", default="3")
    parser.add_argument("--quick", action="store_true", help="2 layers, 8 trials")
    args = parser.parse_args()
    layers = QUICK if args.quick else {"mobilenetv2": MOBILENETV2, "resnet50": RESNET50}
    trials = 8 if args.quick else args.trials
    frames = []
    for suite, names in layers.items():
        tag = f"{args.space.replace(',', '+')}_{args.tuning}_{trials}trials"
        out = args.output / f"{suite}_{tag}"
        if not (out / "records.parquet").exists():
            argv = ["run", "--suite", suite, "--filter", f"layer in {names!r}",
                    "--layout", "NCHW,NHWC", "--backend", "torch,torch-frozen,tvm-tuned",
                    "--threads", str(args.threads), "--trials", str(trials), "--space", args.space,
                    "--tuning", args.tuning, "--sample-ms", args.sample_ms,
                    "--processes", args.processes, "--output", str(out)]
            if args.tuning_dir:
                argv += ["--tuning-dir", str(args.tuning_dir)]
            if cli.main(argv) == 2:
                return 2
        frames.append(pd.read_parquet(out / "records.parquet"))
    print_figures(pd.concat(frames, ignore_index=True))
    return 0


def print_figures(rows: pd.DataFrame) -> None:
    for space in sorted(set(rows.loc[rows["backend"] == "tvm-tuned", "space"].dropna())):
        # one table per TVM design space: the other space's rows left out of "TVM's best"
        mine = rows[(rows["backend"] != "tvm-tuned") | (rows["space"] == space)
                    | (rows["variant"] == "structured-blocked") & (space == "structured")]
        table = speedups.per_layer(mine)
        if table.empty:
            print(f"\n{space} space: no verified rows on both sides")
            continue
        tuned = mine[(mine["backend"] == "tvm-tuned") & (mine["space"] == space)]
        table["tuning_s"] = table["shape_id"].map(_per_shape(tuned, "tuning_s", "sum"))
        table["wall_share_s"] = table["shape_id"].map(_per_shape(tuned, "tuning_wall_s", "sum"))
        table["best_tvm_pct_of_roof"] = [_roof(mine, r) for r in table.to_dict("records")]
        with pd.option_context("display.width", 250, "display.max_columns", 30,
                               "display.float_format", "{:.3g}".format):
            print(f"\n== TVM ({space} space) vs torch per layer (> 1: TVM faster); times in s; "
                  "tuning_s: the layer's own builds and runs (both layouts), wall_share_s: its "
                  "share of the tuning sessions' wall time")
            print(table.drop(columns=["shape_id"]).to_string(index=False))
            print("\ngeomean per kind")
            print(speedups.by_kind(table).to_string(index=False))
            print(f"\ntuning: {table['wall_share_s'].sum():.0f} s wall for {len(table)} layers "
                  f"in 2 layouts ({table['wall_share_s'].sum() / max(len(table), 1):.1f} s per "
                  "layer, both layouts)")


def _per_shape(rows: pd.DataFrame, column: str, how: str) -> dict:
    if column not in rows:
        return {}
    rows = rows[rows["variant"] != "structured-blocked"]
    keys = [speedups._without_layout(s, lay) for s, lay in zip(rows["spec_id"], rows["layout"])]
    return rows.assign(shape=keys).groupby("shape")[column].agg(how).to_dict()


def _roof(rows: pd.DataFrame, row: dict) -> float:
    """% of roofline (the run's measured peaks) of TVM's best row of this layer."""
    name = row["best tvm"]
    if not name:
        return math.nan
    backend, *rest = name.split(" ")
    layout, variant = rest[-1], " ".join(rest[:-1])
    match = rows[(rows["backend"] == backend) & (rows["layout"] == layout)
                 & (rows["variant"].fillna("") == variant)]
    match = match[[speedups._without_layout(s, lay) == row["shape_id"]
                   for s, lay in zip(match["spec_id"], match["layout"])]]
    return float(match["pct_of_roof"].iloc[0]) if len(match) and "pct_of_roof" in match else math.nan


if __name__ == "__main__":
    sys.exit(main())
