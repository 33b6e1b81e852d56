"""Tuning time vs kernel quality for MetaSchedule's search settings, one layer at a time.

Tunes each layer from scratch (a fresh temporary database) once per setting, then times the best
kernel warm with pwbench's timer after verifying it. Prints tuning wall time, MetaSchedule's own
best measurement and the warm medians. Search luck is large (the same setting can find a kernel
1.6x slower on the next run): repeat a comparison before drawing a conclusion from one row.

    python scripts/tuning_settings.py                                 # the issue #5 comparison
    python scripts/tuning_settings.py --layer resnet50:layer1.0-2.conv2 --trials 16 --setting "batch 64"
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

SETTINGS = {  # name: SearchSettings fields
    "default (batch 32, pop 512)": {},
    "batch 64": {"batch": 64},
    "batch 64, pop 256, 2 iters": {"batch": 64, "population": 256, "genetic_iters": 2},
    "cache flush": {"cache_flush": True},
}
LAYERS = ["mobilenetv2:features.5-7.conv.0.0", "mobilenetv2:features.4.conv.1.0",
          "resnet50:layer1.0-2.conv2"]

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--layer", action="append", help="SUITE:LAYER (repeatable; default: 3 layers)")
parser.add_argument("--setting", action="append", choices=SETTINGS, help="default: all")
parser.add_argument("--trials", type=int, default=64)
parser.add_argument("--threads", type=int, default=os.cpu_count())
args = parser.parse_args()

from pwbench import targets  # noqa: E402

CPU = targets.resolve("cpu")
CPU.prepare_process(args.threads)  # before TVM starts its thread pool

from pwbench.measure import timing, verify
from pwbench.tvm_bridge import compiler, runtime  # noqa: E402
from pwbench.workloads import suites


def find(layer: str):
    suite, name = layer.split(":", 1)
    matches = [s for s in suites.load(suite).layers if s.label == name]
    if not matches:
        raise SystemExit(f"no layer {name!r} in suite {suite}")
    return matches[0]


def tune_and_time(spec, settings: dict) -> str:
    target = CPU.tvm_target(args.threads)
    seen = []
    with tempfile.TemporaryDirectory() as work:
        start = time.monotonic()
        compiler.tune(spec, target, Path(work), args.trials, args.threads,
                         lambda s: seen.extend(x for x in s if x is not None) or True,
                         compiler.SearchSettings(**settings))
        wall = time.monotonic() - start
        schedule = compiler.best_schedule(compiler.open_database(Path(work)), spec, target)
        library = compiler.export(compiler.compile_scheduled(target, schedule).executable, Path(work) / "k.so")
        kernel = runtime.load_cpu_kernel(spec, str(library), args.threads)
    check = verify.check(kernel, spec)
    warm = [timing.measure(kernel.clock).median_s * 1e3 for _ in range(3)]
    return (f"{wall:7.1f} s  tuner best {min(seen) * 1e3:8.3f} ms  warm "
            f"{' '.join(f'{w:.3f}' for w in warm)} ms  check {check.verdict}")


print(f"trials={args.trials} threads={args.threads}")
for layer in args.layer or LAYERS:
    spec = find(layer)
    for name in args.setting or SETTINGS:
        print(f"{layer:36} {name:28} {tune_and_time(spec, SETTINGS[name])}", flush=True)
