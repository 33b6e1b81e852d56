"""The TVM figures of issue #21: TVM's fastest NCHW/NHWC row vs the best library row (the fastest
verified row of torch eager, torch-frozen and onnxruntime in any layout), per layer and as a
geomean per kind, over the unique layers of ResNet-50, MobileNetV2 and Inception-v3's 35x35 and
17x17 stages (each in NCHW and NHWC, 2 threads); the lowest layer; network totals per stack for
ResNet-50 and MobileNetV2; the % of roof of TVM's best kernel of every compute-bound full conv;
structured-space coverage; tuning seconds per layer and layout.

    python scripts/bench_tvm.py                      # this CPU, 64 trials, suite-wide
    python scripts/bench_tvm.py --isa avx2           # both stacks capped to AVX2 (see below)
    python scripts/bench_tvm.py --suites mobilenetv2  # some of the networks only
    python scripts/bench_tvm.py --quick              # 3 layers, 4 trials: checks it works

`--isa avx2` builds TVM for `haswell` and caps oneDNN and ATen (ONEDNN_MAX_CPU_ISA=AVX2,
ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2, read when the workers start);
onnxruntime has no such switch (MLAS picks its kernels from CPUID), so it is left out there and
the library side is torch's alone. Runs are ordinary `pwbench run` directories under --output,
reused when present (delete one to measure it again); the tuning database is kept in
--tuning-dir. Use a quiet machine: torch at 2 threads is bimodal under load.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import pandas as pd

from pwbench import cli
from pwbench.report import speedups

SUITES = {"resnet50": None, "mobilenetv2": None,
          "inception_v3": "height == 35 or height == 17"}  # the 35x35 and 17x17 stages' inputs
NETWORKS = ("resnet50", "mobilenetv2")
QUICK = {"mobilenetv2": "layer in ['features.3.conv.1.0', 'features.2.conv.2']",
         "inception_v3": "layer == 'Mixed_6a.branch3x3.conv'"}
AVX2 = {"target": '{"kind": "llvm", "mcpu": "haswell"}',
        "env": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def run(suite: str, where: str | None, args, out: Path) -> pd.DataFrame:
    if not (out / "records.parquet").exists():
        backends = "torch,torch-frozen,tvm-tuned" if args.isa == "avx2" else \
            "torch,torch-frozen,onnxruntime,tvm-tuned"
        argv = ["run", "--suite", suite, "--layout", "NCHW,NHWC", "--backend", backends,
                "--threads", str(args.threads), "--trials", str(args.trials),
                "--sample-ms", str(args.sample_ms), "--processes", str(args.processes),
                "--output", str(out), "--tuning-dir", str(args.tuning_dir)]
        argv += ["--filter", where] if where else []
        argv += ["--target", AVX2["target"]] if args.isa == "avx2" else []
        if cli.main(argv) == 2:
            sys.exit(2)
    return pd.read_parquet(out / "records.parquet")


def roof_of_best(rows: pd.DataFrame, table: pd.DataFrame) -> pd.Series:
    """% of roof of TVM's best kernel of each layer (the run's measured peaks)."""
    tvm = rows[rows["backend"] == "tvm-tuned"].copy()
    tvm["shape"] = [speedups._without_layout(s, lay) for s, lay in zip(tvm["spec_id"], tvm["layout"])]
    tvm["name"] = "tvm-tuned " + tvm["variant"].fillna("") + " " + tvm["layout"]
    found = {(r["shape"], r["name"]): r["pct_of_roof"] for r in tvm.to_dict("records")}
    return pd.Series([found.get((r["shape_id"], r["best tvm"]), math.nan)
                      for r in table.to_dict("records")], index=table.index)


def summary(name: str, rows: pd.DataFrame) -> pd.DataFrame:
    table = speedups.per_layer(rows)
    table["tvm_roof_pct"] = roof_of_best(rows, table)
    tvm = rows[(rows["backend"] == "tvm-tuned") & (rows["variant"] == "structured")]
    table["bound"] = table["shape_id"].map(_first(rows, "bound"))
    table["tuning_wall_s"] = table["shape_id"].map(_sum(tvm, "tuning_wall_s"))
    totals = speedups.network_totals(table)
    spaces = rows[rows["backend"] == "tvm-tuned"]["space"].value_counts().to_dict()
    print(f"\n== {name}: {len(table)} layers; tvm-tuned rows per space {spaces}; suite total "
          f"{totals.get('library_s', math.nan) * 1e3:.2f} ms (library's best) vs "
          f"{totals.get('tvm_s', math.nan) * 1e3:.2f} ms (TVM's best): TVM at "
          f"{1 / totals.get('ratio', math.nan):.2f}x the library's time")
    with pd.option_context("display.width", 250, "display.max_columns", 30,
                           "display.float_format", "{:.3g}".format):
        print(table[["layer", "kind", "count", "best library", "best library s", "best tvm",
                     "best tvm s", "best vs best", "tvm_roof_pct", "tuning_wall_s"]]
              .to_string(index=False))
    return table


def _first(rows, column):
    keys = [speedups._without_layout(s, lay) for s, lay in zip(rows["spec_id"], rows["layout"])]
    return rows.assign(shape=keys).groupby("shape")[column].first().to_dict()


def _sum(rows, column):
    keys = [speedups._without_layout(s, lay) for s, lay in zip(rows["spec_id"], rows["layout"])]
    return rows.assign(shape=keys).groupby("shape")[column].sum().to_dict()


def goals(tables: dict) -> None:
    every = pd.concat(tables.values(), ignore_index=True).drop_duplicates("shape_id")
    print(f"\n== all {len(every)} unique layers: geomean per kind of TVM's best vs the best "
          "library, the lowest layer")
    print(speedups.by_kind(every).to_string(index=False))
    full = every[(every["kind"] == "full") & (every["bound"] == "compute")]
    print(f"compute-bound full convs: TVM's best at {full['tvm_roof_pct'].min():.0f}-"
          f"{full['tvm_roof_pct'].max():.0f} % of the roof (median {full['tvm_roof_pct'].median():.0f} %)")
    print(f"tuning: {every['tuning_wall_s'].sum():.0f} s for {len(every)} layers in 2 layouts: "
          f"{every['tuning_wall_s'].sum() / max(2 * len(every), 1):.1f} s per layer and layout")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isa", choices=("native", "avx2"), default="native")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--processes", default="2")
    parser.add_argument("--sample-ms", default="300")
    parser.add_argument("--output", type=Path, default=Path("results/bench_tvm"))
    parser.add_argument("--tuning-dir", type=Path, default=Path("results/bench_tvm/tuning"))
    parser.add_argument("--suites", default=",".join(SUITES),
                        help=f"which of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="3 layers, 4 trials")
    args = parser.parse_args()
    if args.isa == "avx2":
        os.environ.update(AVX2["env"])
    if args.quick:
        args.trials = 4
    names = args.suites.split(",")
    unknown = sorted(set(names) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}: choose from {', '.join(SUITES)}")
    chosen = QUICK if args.quick else {name: SUITES[name] for name in names}
    tables = {}
    for suite, where in chosen.items():
        out = args.output / f"{args.isa}_{suite}_{args.trials}trials"
        tables[suite] = summary(suite, run(suite, where, args, out))
    goals(tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
