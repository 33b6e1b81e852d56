"""Warm-start tables (pwbench/tvm_bridge/warm.py): make them, and check what they are worth.

    python scripts/warm_start.py make --isa avx2      # tune the default suite (both layouts) for
    python scripts/warm_start.py make --isa avx512    # haswell / skylake-avx512, 64 trials, and
                                                      # write pwbench/tvm_bridge/warm/x86-<isa>.json
    python scripts/warm_start.py check --isa avx2     # the first look, cold, with the table, next
                                                      # to 64-trial tuning: TVM's best per layer

`make` needs a CPU that runs the ISA (AVX2 code runs on every AVX-512 machine). `check` times
both in one invocation, interleaved (3 processes each), and prints the ratio of TVM's best per
layer (first look / 64 trials: 1.00 means the warm start reached what 64 trials reach) and the
speedups over the best library of both runs. Use a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from pwbench import cli, targets
from pwbench.report import speedups
from pwbench.tvm_bridge import layers, warm
from pwbench.tvm_bridge.database import Database
from pwbench.workloads import suites

TARGETS = {"avx2": '{"kind": "llvm", "mcpu": "haswell"}',
           "avx512": '{"kind": "llvm", "mcpu": "skylake-avx512"}'}
CAPS = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}, "avx512": {}}


def make(isa: str, trials: int, threads: int, work: Path) -> None:
    given = TARGETS[isa]
    code = cli.main(["tune", "--suite", "default", "--layout", "NCHW,NHWC", "--target", given,
                     "--threads", str(threads), "--trials", str(trials), "--tuning-dir", str(work)])
    if code:
        sys.exit(code)
    target = targets.resolve(given)
    chain = target.toolchain(threads)
    db = Database(work, chain.target, target.tuning_facts())
    table = {}
    for spec in suites.load("default", layout="NCHW,NHWC").layers:
        plan = layers.plan(spec, chain, "structured")
        if plan.space == "structured":
            outcome = layers.best(spec, db, plan)
            table[spec.id] = layers.knobs_text(outcome.task, outcome.schedule)
    path = warm.TABLES / f"x86-{isa}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({
        "isa": f"x86-{isa}", "tvm_target": given, "trials": trials, "threads": threads,
        "made": datetime.date.today().isoformat(), "cpu": target.facts()["hardware"],
        "layers": table}, indent=1) + "\n")
    print(f"wrote {path} ({len(table)} layers)")


def check(isa: str, threads: int, work: Path) -> None:
    os.environ.update(CAPS[isa])  # the libraries capped too, read when the workers start
    common = ["--target", TARGETS[isa], "--threads", str(threads), "--processes", "3"]
    runs = {}
    for name, extra in (("first look, cold, warm-started", ["--tuning-dir", str(work / "cold")]),
                        ("64 trials", ["--trials", "64", "--suite", "default", "--layout",
                                       "NCHW,NHWC", "--backend",
                                       "torch,torch-frozen,onnxruntime,tvm-tuned",
                                       "--sample-ms", "100", "--warmup-ms", "20",
                                       "--tuning-dir", str(work / "t64")])):
        out = work / name.split(",")[0].replace(" ", "_")
        if cli.main(["run", *common, *extra, "--output", str(out)]) == 2:
            sys.exit(2)
        runs[name] = speedups.per_layer(pd.read_parquet(out / "records.parquet"))
    first, full = runs.values()
    ratio = (first.set_index("layer")["best tvm s"] / full.set_index("layer")["best tvm s"])
    print(ratio.rename("TVM's best: first look / 64 trials").to_string())
    for name, table in runs.items():
        print(f"\n{name}:\n{speedups.by_kind(table).to_string(index=False)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("make", "check"))
    parser.add_argument("--isa", choices=tuple(TARGETS), required=True)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pwbench-warm-") as tmp:
        if args.what == "make":
            make(args.isa, args.trials, args.threads, Path(tmp))
        else:
            check(args.isa, args.threads, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
