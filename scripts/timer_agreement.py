"""pwbench's timer next to torch.utils.benchmark's blocked_autorange, on the same callables.

For three torch convs (pointwise, depthwise, full) both timers measure the same prepared kernel
with the same thread count, alternating for a few rounds so that machine noise hits both alike.
Prints each timer's median (of the per-round medians) and their ratio; the goal is within 5 %.

    python scripts/timer_agreement.py [--threads N] [--rounds R]
"""

import argparse
import os
import statistics

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--rounds", type=int, default=5)
args = parser.parse_args()

from pwbench import targets

CPU = targets.resolve("cpu")
CPU.prepare_process(args.threads)  # before torch starts its thread pool

import torch  # noqa: E402
from torch.utils.benchmark import Timer  # noqa: E402

from pwbench.backends import torch_backend  # noqa: E402
from pwbench.backends.base import Options  # noqa: E402
from pwbench.measure import timing  # noqa: E402
from pwbench.workloads import suites  # noqa: E402

layers = {s.name: s for s in suites.load("default").layers}
chosen = ["resnet50.layer1.0.conv1", "mobilenetv2.features.4.conv.1", "resnet50.layer1.0.conv2"]
budget = timing.Budget(warmup_ms=100, sample_ms=400)

print(f"threads={args.threads} rounds={args.rounds} torch={torch.__version__}")
print(f"{'layer':34} {'kind':10} {'pwbench':>11} {'blocked_autorange':>18} {'ratio':>7}")
for name in chosen:
    spec = layers[name]
    kernel = torch_backend.Backend(CPU, Options(threads=args.threads)).build(spec).make()
    kernel.load(*spec.example_inputs("random", 1))
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(timing.measure(kernel.clock, budget).median_s)
        timer = Timer("kernel()", globals={"kernel": kernel}, num_threads=args.threads)
        theirs.append(timer.blocked_autorange(min_run_time=0.4).median)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"{name:34} {spec.kind:10} {a * 1e6:9.1f}us {b * 1e6:16.1f}us {a / b:7.3f}")
