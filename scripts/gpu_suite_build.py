"""The GPU path through the one tuner, without a GPU: the default suite's layers (NCHW and NHWC)
as one MetaSchedule task set for a CUDA arch (the CUDA design space, tensor-core rules included),
every candidate built here by the Cuda toolchain's builder step (nvcc, ptxas' report kept), none
measured (no GPU: each candidate's run is reported as not measured, so nothing is ranked and
nothing is kept as a schedule). Prints the build seconds per candidate and, per layer, the range
of registers, shared memory and spills of its candidates, beside `pwbench build`'s DLight
kernels built layer at a time for the same arch.

    python scripts/gpu_suite_build.py                  # sm_90, 8 candidates per layer
    python scripts/gpu_suite_build.py --arch sm_80 --trials 16

On a GPU machine `pwbench tune --target cuda` tunes the same task set with candidates measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from pwbench import cli, targets
from pwbench.tvm_bridge import cuda, cuda_resources, layers, toolchains, tuner
from pwbench.workloads import suites


class BuildOnly(toolchains.Cuda):
    """The Cuda toolchain with a runner that measures nothing, and every nvcc report kept."""

    reports: list = []

    def compile_candidate(self, mod):
        executable = super().compile_candidate(mod)
        self.reports.append(cuda.NVCC.calls[-1])
        return executable

    def runner(self, ms, evaluator, threads):
        from tvm.ir.utils import derived_object

        @derived_object
        class NotMeasured(ms.runner.PyRunnerFuture):
            def done(self):
                return True

            def result(self):
                return ms.runner.RunnerResult(None, "not measured: no GPU here")

        @derived_object
        class NoGpuRunner(ms.runner.PyRunner):
            def run(self, runner_inputs):
                return [NotMeasured() for _ in runner_inputs]

        return NoGpuRunner()


def tune_build_only(arch: str, trials: int, work: Path) -> pd.DataFrame:
    target = targets.resolve("cuda").with_arch(arch)
    chain = BuildOnly(target.tvm_target(1), 1)
    specs = list({s.id: s for s in suites.load("default", layout="NCHW,NHWC").layers}.values())
    jobs = [layers.job(s, layers.plan(s, chain, "default")) for s in specs]
    session = tuner.Tuner(chain, work, 1)
    rows, start = [], time.monotonic()
    try:
        session.tune([t for j in jobs for t in j.tasks], trials * len(jobs),
                     lambda task, seconds, spent: rows.append((task.key, len(seconds), spent)) or True,
                     batch=trials)
    finally:
        session.close()
    print(f"one task set of {len(jobs)} layers for {arch}: {time.monotonic() - start:.0f} s wall "
          f"(the CUDA design space's tensor intrinsics load once), {len(chain.reports)} "
          f"candidates built by nvcc")
    return _resources(chain.reports, rows)


def _resources(reports: list, batches: list) -> pd.DataFrame:
    seconds = [r["seconds"] for r in reports]
    print(f"nvcc seconds per candidate: median {statistics.median(seconds):.2f}, max "
          f"{max(seconds):.2f}, total {sum(seconds):.0f}")
    kernels = [k for r in reports for k in cuda_resources.parse_ptxas(r["ptxas"])]
    frame = pd.DataFrame([k.to_dict() for k in kernels])
    return frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--trials", type=int, default=8, help="candidates per layer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pwbench-gpu-suite-") as tmp:
        frame = tune_build_only(args.arch, args.trials, Path(tmp) / "db")
        cols = [c for c in ("registers", "shared_bytes", "spill_store_bytes", "spill_load_bytes")
                if c in frame]
        print("\ncandidates' device functions (ptxas):")
        print(frame[cols].describe().loc[["count", "min", "50%", "max"]].to_string())
        print(f"\nlayer at a time, DLight (`pwbench build --target cuda --arch {args.arch}`):")
        return cli.main(["build", "--target", "cuda", "--arch", args.arch, "--suite", "default",
                         "--layout", "NCHW,NHWC", "--output", str(Path(tmp) / "bundle")])


if __name__ == "__main__":
    sys.exit(main())
