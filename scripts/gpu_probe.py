"""Does pwbench's GPU clock time the kernel? The probe of the prepared check (scripts/gpu_check.py).

    python probe.py --kernels BUNDLE --out probe.json     # BUNDLE: the check's `probe` bundle

For a long and a tiny conv, run by torch (cuDNN) and by TVM (the bundle's DLight kernels), it
compares what CUDA events say a call takes with what the profiler (CUPTI) says the GPU kernels of
a call ran for, hot: eager blocks of calls, with the host's enqueue time per call and the
launch-bound flag, and CUDA-graph replay; and cold (256 MiB zeroed before each sample): one call
on an idle stream (the host's dispatch inside the sample) and one behind a held stream (kept
out), next to the profiler's duration of cold calls. A clock that times the kernel has events /
profiler near 1 for the long kernels hot and cold, and for the tiny ones under graph replay and
behind the held stream; the tiny kernels' eager blocks show the dispatch instead (launch-bound).
"""

from __future__ import annotations

import os

os.environ.update({"TVM_USE_RUNTIME_LIB": "1", "TVM_FFI_DISABLE_TORCH_C_DLPACK": "1"})  # as a worker

import argparse
import json
import statistics
from pathlib import Path

import torch

from pwbench.backends import torch_backend
from pwbench.measure import clocks, timing
from pwbench.store import bundle as bundles
from pwbench.targets.cuda import CudaGPU

BUDGET = timing.Budget(warmup_ms=200, sample_ms=300)
COLD_SAMPLES = 30


def kernels(kit) -> list[tuple[str, str, object]]:
    """(layer, backend, kernel) for each layer of the bundle, torch's and TVM's."""
    from pwbench.tvm_bridge import runtime
    from pwbench.tvm_bridge.kernel import Artifact

    made = []
    for spec in kit.layers:
        conv = torch_backend.TorchConv(spec, "cuda:0", 1)
        made.append((spec.name, "torch", conv))
        entry = kit.kernel(spec.id, "tvm")[0]
        library = str(bundles.library_path(kit.dir, entry))
        tvm = runtime.load(Artifact.from_dict(spec, library, entry.artifact | {"device": "cuda"}), 1)
        made.append((spec.name, "tvm", tvm))
    for _, _, kernel in made:
        kernel.load(*kernel.spec.example_inputs("random", 1))
        kernel()
    torch.cuda.synchronize()
    return made


def profiled_s(call, calls: int, before=lambda: None) -> float:
    """GPU seconds per call of the kernels launched by `call`, by the profiler (CUPTI)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            before()
            torch.cuda.synchronize()
            call()
        torch.cuda.synchronize()
    flush = ("fill", "memset")  # the eviction's own kernel (zero_) is not the conv's
    total = sum(e.time_range.elapsed_us() for e in prof.events()
                if str(e.device_type).endswith("CUDA") and not any(f in e.name.lower() for f in flush))
    return total / 1e6 / calls


def cold_samples(clock, target, held: bool) -> list[float]:
    out = []
    for _ in range(COLD_SAMPLES):
        target.evict()
        out.append(clock.time_cold() if held else clock.time(1))
    return out


def probe_one(layer: str, backend: str, kernel, target) -> dict:
    hot = timing.measure(kernel.clock, BUDGET)
    graph = timing.measure(clocks.graphed(kernel), BUDGET)
    kernel_s = profiled_s(kernel, max(1, min(hot.number, 200)))
    cold_kernel_s = profiled_s(kernel, 10, target.evict)
    idle = statistics.median(cold_samples(kernel.clock, target, held=False))
    held = statistics.median(cold_samples(kernel.clock, target, held=True))
    return {"layer": layer, "backend": backend, "flops": kernel.spec.flops,
            "profiler_hot_s": kernel_s, "events_hot_s": hot.median_s, "number": hot.number,
            "events_over_profiler_hot": hot.median_s / kernel_s, **hot.columns(),
            "graph_s": graph.median_s, "graph_over_profiler": graph.median_s / kernel_s,
            "profiler_cold_s": cold_kernel_s, "cold_idle_stream_s": idle, "cold_held_s": held,
            "cold_held_over_profiler": held / cold_kernel_s,
            "cold_idle_over_profiler": idle / cold_kernel_s, **kernel.clock.columns()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=Path, required=True, help="the probe bundle")
    parser.add_argument("--out", type=Path, required=True, help="the figures, as JSON")
    args = parser.parse_args()
    target = CudaGPU()
    rows = []
    for layer, backend, kernel in kernels(bundles.read(args.kernels)):
        try:
            rows.append(probe_one(layer, backend, kernel, target))
        except Exception as exc:  # one kernel's failure must not lose the others' figures
            rows.append({"layer": layer, "backend": backend, "error": f"{type(exc).__name__}: {exc}"})
        print(json.dumps(rows[-1]), flush=True)
    facts = target.facts()
    args.out.write_text(json.dumps({"gpu": facts.get("gpu"), "driver": facts.get("gpu_driver"),
                                    "torch": torch.__version__, "rows": rows}, indent=1))
    for r in rows:
        if "error" in r:
            print(f"{r['layer']:5} {r['backend']:5} error: {r['error']}")
            continue
        print(f"{r['layer']:5} {r['backend']:5} profiler {r['profiler_hot_s'] * 1e6:9.1f} us | "
              f"events {r['events_over_profiler_hot']:.2f}x (enqueue {r['host_enqueue_s'] * 1e6:.1f} "
              f"us, launch-bound {r['launch_bound']}) | graph {r['graph_over_profiler']:.2f}x | "
              f"cold idle {r['cold_idle_over_profiler']:.2f}x, held {r['cold_held_over_profiler']:.2f}x")


if __name__ == "__main__":
    main()
