"""Figures for ARM boards and fleets (RPC), printed as Markdown tables:

1. local vs loopback RPC: the same TVM kernel timed here (pwbench's host clock, as a worker does)
   and on a board server on 127.0.0.1 (TVM's time_evaluator, as a board's rows are timed), both
   with pwbench's ms budgets (timing.measure), in interleaved rounds; ratio rpc / local (goal:
   within 3 %).
2. tuning across a fleet: 64 MetaSchedule trials of one layer with the candidates measured on 1
   and on 2 loopback servers (one RPCRunner worker per board): wall time of each.
3. aarch64 numerics under qemu: every layer kind (and layout), built for aarch64 (NEON, Neoverse
   N1, Neoverse V1 with SVE), run on the emulated board: exact-check verdicts.

    python scripts/rpc_figures.py [--only local,tuning,aarch64] [--trials 64] [--rounds 6]

The CPU is shared with everything else on the machine: the 1-minute load average is printed with
each figure; rerun timing figures on a quiet machine before quoting them. The aarch64 figure
needs scripts/setup_aarch64_runtime.sh's runtime ($PWBENCH_AARCH64_RUNTIME).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pwbench import targets  # noqa: E402
from pwbench.backends import tvm_backend  # noqa: E402
from pwbench.backends.base import Options  # noqa: E402
from pwbench.measure import timing, verify  # noqa: E402
from pwbench.targets import local_fleet  # noqa: E402
from pwbench.targets.board import Endpoint  # noqa: E402
from pwbench.workloads.spec import ConvSpec  # noqa: E402

BUDGET = timing.Budget()  # pwbench run's defaults: 50 ms warm-up, 400 ms of samples


def load() -> str:
    one, five, _ = os.getloadavg()
    usable = len(os.sched_getaffinity(0))  # what this process (and the servers it starts) may use
    return (f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores, "
            f"{usable} usable by this process")


def local_vs_rpc(work: Path, rounds: int) -> None:
    """One structured kernel (the space's first point for this CPU, no tuning), exported once as
    an artifact and loaded here and on a loopback board: the same library either way."""
    import tvm

    from pwbench.measure.clocks import EvaluatorClock
    from pwbench.tvm_bridge import board, runtime, spaces
    from pwbench.tvm_bridge.kernel import Artifact

    spec = ConvSpec(1, 64, 64, 28, 28, 3, 1, 1)  # 3x3 64->64 @28x28: about a millisecond
    fleet = local_fleet.new(work / "f1.json", lifetime_s=1800, log_dir=work / "f1-logs")
    try:
        fleet.start_tracker(local_fleet.free_port())
        fleet.start_server("x86")
        fleet.wait({"x86": 1})
        here = targets.resolve("cpu").toolchain(1)
        task = spaces.tasks(spec, here.target)[0]
        schedule = spaces.fixed(task, task.structures[0], task.reg_choices[0])
        library = here.export(tvm.compile(schedule.mod, target=tvm.target.Target(here.target)),
                              work / "structured.so")
        artifact = Artifact(spec, str(library), task.packing)
        endpoint = Endpoint("127.0.0.1", fleet.tracker_port, "x86")
        local = runtime.load(artifact, 1)
        assert verify.check(local, spec).passed
        module = tvm.runtime.load_module(str(library))
        evaluator = EvaluatorClock(board.Timer(module, tvm.cpu(0), (local.x, local.w, local.y), "main"))
        print(f"\n### 1. The same kernel timed locally and through a loopback RPC server\n\n"
              f"{spec.label} (a structured kernel, {spaces.knobs(schedule)[0].text}), 1 thread, budgets {BUDGET.warmup_ms:.0f} ms warm-up + "
              f"{BUDGET.sample_ms:.0f} ms samples, {rounds} rounds, the order rotated each round; "
              f"{load()}\n\nlocal: the host clock a worker uses for this machine's rows; local "
              "evaluator: TVM's time_evaluator in this process; RPC: time_evaluator on the board "
              "server (a board's rows)\n")
        print("| round | local (host clock) | local evaluator | RPC (board evaluator) | rpc / local | "
              "rpc / local evaluator |")
        print("| --- | --- | --- | --- | --- | --- |")
        medians = {"local": [], "evaluator": [], "rpc": []}
        for r in range(rounds):
            remote = board.load(artifact, 1, endpoint)
            try:
                assert verify.check(remote, spec).passed
                clocks = [("local", local.clock), ("evaluator", evaluator), ("rpc", remote.clock)]
                clocks = clocks[r % 3:] + clocks[:r % 3]
                got = {tag: timing.measure(clock, BUDGET).median_s for tag, clock in clocks}
            finally:
                remote.close()
            for tag, value in got.items():
                medians[tag].append(value)
            print(f"| {r + 1} | {got['local'] * 1e3:.3f} ms | {got['evaluator'] * 1e3:.3f} ms | "
                  f"{got['rpc'] * 1e3:.3f} ms | {got['rpc'] / got['local']:.3f} | "
                  f"{got['rpc'] / got['evaluator']:.3f} |")
        m = {tag: statistics.median(v) for tag, v in medians.items()}
        ratio = statistics.median(r / l for r, l in zip(medians["rpc"], medians["local"]))
        ratio_ev = statistics.median(r / e for r, e in zip(medians["rpc"], medians["evaluator"]))
        print(f"| median | {m['local'] * 1e3:.3f} ms | {m['evaluator'] * 1e3:.3f} ms | "
              f"{m['rpc'] * 1e3:.3f} ms | **{ratio:.3f}** | **{ratio_ev:.3f}** |")
        print(f"\n(after: {load()})")
    finally:
        fleet.stop()


def tuning(work: Path, trials: int) -> None:
    from pwbench.tvm_bridge import layers, tuner

    spec = ConvSpec(1, 32, 64, 28, 28)  # 1x1 32->64 @28x28 NCHW
    fleet = local_fleet.new(work / "f2.json", lifetime_s=3600, log_dir=work / "f2-logs")
    try:
        fleet.start_tracker(local_fleet.free_port())
        fleet.start_server("one", stock=True)
        for _ in range(2):
            fleet.start_server("two", stock=True)
        fleet.wait({"one": 1, "two": 2})
        print(f"\n### 2. {trials} tuning trials of {spec.label} with 1 and 2 loopback servers\n\n"
              f"MetaSchedule's default space (xgb cost model, batches of 32) through the one tuner "
              f"with the board's toolchain: candidates built here as linked .so, measured on the "
              f"boards (RPCRunner, one worker per board), 1 thread; {load()}\n")
        print("| servers | wall time | of it: waiting for the runner | building | valid trials | "
              "best (tuner) | load average after |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        from tvm.s_tir import meta_schedule as ms

        for key, n in (("one", 1), ("two", 2)):
            chain = targets.resolve("cpu", Endpoint("127.0.0.1", fleet.tracker_port, key)).toolchain(1)
            job = layers.job(spec, layers.plan(spec, chain, "default"))
            session = tuner.Tuner(chain, work / f"db-{key}", 1)
            measured = []
            start = time.monotonic()
            with ms.Profiler() as profiler:
                session.tune(job.tasks, trials, lambda t, s, _: measured.extend(s) or True)
            session.close()
            wall = time.monotonic() - start
            stats = {k: float(v) for k, v in profiler.get().items()}
            valid = [s for s in measured if s is not None]
            best = f"{min(valid) * 1e6:.1f} us" if valid else "-"
            print(f"| {n} | {wall:.0f} s | {stats.get('JoinRunnerFutures', float('nan')):.0f} s | "
                  f"{stats.get('SendToBuilder', float('nan')):.0f} s | {len(valid)}/{len(measured)} | "
                  f"{best} | {os.getloadavg()[0]:.1f} |")
    finally:
        fleet.stop()


def aarch64(work: Path) -> None:
    from test_tvm import LAYERS

    from pwbench.tvm_bridge import rpc

    runtime = local_fleet.aarch64_runtime()
    problem = local_fleet.aarch64_problem(runtime)
    if problem:
        print(f"\n### 3. aarch64 numerics under qemu: skipped ({problem})")
        return
    fleet = local_fleet.new(work / "f3.json", lifetime_s=1800, log_dir=work / "f3-logs")
    try:
        fleet.start_tracker(local_fleet.free_port())
        fleet.start_aarch64(runtime)
        start = time.monotonic()
        fleet.wait({local_fleet.AARCH64_KEY: 1})
        print(f"\n### 3. aarch64 numerics under qemu (emulated board up in "
              f"{time.monotonic() - start:.0f} s; {load()})\n")
        cores = ("arm", "neoverse-n1", "neoverse-v1")
        print("| layer kind | layout | " + " | ".join(cores) + " |")
        print("| --- | --- | " + " | ".join("---" for _ in cores) + " |")
        endpoint = Endpoint("127.0.0.1", fleet.tracker_port, local_fleet.AARCH64_KEY)
        total = passed = 0
        for name, spec in LAYERS.items():
            for layout in ("NCHW", "NHWC"):
                cells = []
                for core in cores:
                    board = targets.resolve(core, endpoint)
                    s = spec.replace(layout=layout)
                    built = tvm_backend.Backend(board, Options(threads=1, work_dir=work / core)).build(s)

                    def check(built=built, s=s):
                        kernel = built.make()
                        try:
                            return verify.check(kernel, s)
                        finally:
                            kernel.close()

                    try:
                        result = rpc.bounded(check, 120, f"{name} on {core}")
                        cells.append(result.verdict + (f" ({result.detail})" if result.detail else ""))
                        passed += result.passed
                    except rpc.BoardError as exc:
                        cells.append(f"error: {exc}")
                    total += 1
                print(f"| {name} | {layout} | " + " | ".join(cells) + " |")
        print(f"\n{passed}/{total} passed the exact check (bit for bit) and the random check")
    finally:
        fleet.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="local,tuning,aarch64")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    print(f"# RPC figures ({time.strftime('%Y-%m-%d %H:%M')}, {load()})")
    with tempfile.TemporaryDirectory(prefix="pwbench-rpc-figures-") as tmp:
        os.environ.setdefault("PWBENCH_CACHE_DIR", str(Path(tmp) / "cache"))
        wanted = args.only.split(",")
        if "local" in wanted:
            local_vs_rpc(Path(tmp), args.rounds)
        if "tuning" in wanted:
            tuning(Path(tmp), args.trials)
        if "aarch64" in wanted:
            aarch64(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
