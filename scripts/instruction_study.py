"""Figures for the instruction clock (README, "Instruction counts"), measured on this machine.

    python scripts/instruction_study.py                      # 10 + 10 invocations of suite ci
    python scripts/instruction_study.py --runs 3 --hash-seed random --work /tmp/study

1. A/A: `--runs` separate `pwbench run --clock instructions` invocations of one suite (torch, tvm,
   tvm-tuned, tuned once beforehand); per kernel, the largest relative difference of its
   instructions per call between any two invocations (max / min - 1), and the verdicts of
   `pwbench compare` on consecutive pairs (any `slower` is a false alarm).
2. More work: `--runs` invocations with a torch backend that does 10 % more work on every call
   (scripts/more_work_backend.py), invocation i compared with clean invocation i: in how many
   pairs each torch kernel is caught (`slower`), and its count ratio.
3. Where an invocation's time goes: wall and CPU seconds of each (CPU: getrusage of the children,
   valgrind's workers included), split with the records' valgrind_* columns into start-up (Python
   and imports under valgrind), check (make + verify), warm-up and counted calls; the rest is the
   main process (building, references, tables) and stopping the worker.
4. The same kernels timed natively: `pwbench run --threads 1` with the TVM target the clock builds
   for (haswell) and oneDNN / MKL / ATen capped to AVX2 as under the clock (same database, so the
   same tuned schedules): time per call next to instructions per call and FLOPs.

--hash-seed random gives every worker a random Python hash seed: each invocation then sees
another heap, as an unrelated change would make it (measure/instructions.py); `fixed` (default)
keeps pwbench's seeds, so unchanged code repeats its counts. Use a quiet machine for the times;
the counts do not care. Prints Markdown tables and writes WORK/study.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

SCRIPTS = Path(__file__).resolve().parent
MORE_WORK = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from pwbench import backends as b; "
             "b.register(b.BackendInfo('torch', 'more_work_backend', ('torch',), 'torch', "
             "'torch doing 10 % more work')); from pwbench.cli import main; sys.exit(main(sys.argv[1:]))")
CAPPED_TARGET = '{"kind": "llvm", "mcpu": "haswell"}'  # what targets/host.py COUNTED_ISA builds for
CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
BACKENDS = "torch,tvm,tvm-tuned"


def pwbench(args, more_work=False, env=None) -> tuple[subprocess.CompletedProcess, float, float]:
    """(process, wall s, CPU s of it and its children)."""
    command = [sys.executable, "-c", MORE_WORK, str(SCRIPTS)] if more_work else \
        [str(Path(sys.executable).parent / "pwbench")]
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    proc = subprocess.run([*command, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return proc, time.monotonic() - start, cpu


def counted_run(out: Path, a, more_work=False) -> dict:
    env = {"PYTHONHASHSEED": "random"} if a.hash_seed == "random" else {}
    proc, wall, cpu = pwbench(["run", "--suite", a.suite, "--clock", "instructions", "--backend",
                               BACKENDS if not more_work else "torch,tvm", "--tuning-dir",
                               a.work / "db", "--trials", a.trials, "--output", out],
                              more_work, env)
    if proc.returncode != 0:
        raise SystemExit(f"pwbench run failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    lines = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    split = {phase: sum(line.get(f"valgrind_{phase}_s", 0) for line in lines)
             for phase in ("check", "warmup", "counted")}
    split_cpu = {phase: sum(line.get(f"valgrind_{phase}_cpu_s", 0) for line in lines)
                 for phase in ("check", "warmup", "counted")}
    starts = {line["process"]: (line.get("valgrind_startup_s", 0),
                                line.get("valgrind_startup_cpu_s", 0)) for line in lines}
    split["startup"] = sum(s[0] for s in starts.values())
    split_cpu["startup"] = sum(s[1] for s in starts.values())
    return {"dir": str(out), "wall_s": wall, "cpu_s": cpu, "split_s": split,
            "split_cpu_s": split_cpu, "load": os.getloadavg()[0]}


def counts(run_dir: str) -> pd.Series:
    frame = pd.read_parquet(Path(run_dir) / "records.parquet")
    return frame.set_index(["layer", "backend"])["instructions"]


def verdicts(base: str, new: str) -> dict:
    proc, _, _ = pwbench(["compare", base, new, "--format", "json"])
    if proc.returncode not in (0, 1):
        raise SystemExit(f"pwbench compare failed: {proc.stderr.strip()}")
    return {(r["layer"], r["backend"]): (r["verdict"], r["ratio"])
            for r in json.loads(proc.stdout)["rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--suite", default="ci")
    ap.add_argument("--trials", type=int, default=16, help="tvm-tuned trials per layer (once)")
    ap.add_argument("--hash-seed", choices=("fixed", "random"), default="fixed")
    ap.add_argument("--work", type=Path, help="keep the runs here (default: a temporary dir)")
    a = ap.parse_args()
    a.work = a.work or Path(tempfile.mkdtemp(prefix="instruction_study_"))
    a.work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {a.work}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
          flush=True)

    proc, wall, cpu = pwbench(["tune", "--suite", a.suite, "--target", CAPPED_TARGET, "--threads",
                               1, "--trials", a.trials, "--space", "default",  # what the clock counts
                               "--tuning-dir", a.work / "db"])
    if proc.returncode != 0:
        raise SystemExit(f"pwbench tune failed: {proc.stderr.strip()[-800:]}")
    print(f"tuned the suite for {CAPPED_TARGET} in {wall:.0f} s ({cpu:.0f} s CPU)", flush=True)

    clean, more = [], []
    for i in range(a.runs):
        clean.append(counted_run(a.work / f"clean{i}", a))
        more.append(counted_run(a.work / f"more{i}", a, more_work=True))
        print(f"pair {i + 1}/{a.runs}: clean {clean[-1]['wall_s']:.0f} s ({clean[-1]['cpu_s']:.0f} "
              f"s CPU), more work {more[-1]['wall_s']:.0f} s", flush=True)

    table = pd.concat([counts(r["dir"]) for r in clean], axis=1)
    aa = [verdicts(x["dir"], y["dir"]) for x, y in zip(clean, clean[1:])]
    ab = [verdicts(x["dir"], y["dir"]) for x, y in zip(clean, more)]
    timed_dir = a.work / "timed"
    proc, twall, tcpu = pwbench(["run", "--suite", a.suite, "--backend", BACKENDS, "--threads", 1,
                                 "--target", CAPPED_TARGET, "--tuning-dir", a.work / "db",
                                 "--trials", a.trials, "--space", "default", "--no-blocked",
                                 "--output", timed_dir], env=CAPS)
    if proc.returncode != 0:
        raise SystemExit(f"timed run failed: {proc.stderr.strip()[-800:]}")
    timed = pd.read_parquet(timed_dir / "records.parquet").set_index(["layer", "backend"])

    print(f"\n### A/A: {a.runs} invocations, hash seed {a.hash_seed}\n")
    print("| layer | backend | instructions per call (first) | largest difference | "
          "A/A verdicts | 10 % more work: caught | count ratio |")
    print("| --- | --- | ---: | ---: | --- | --- | ---: |")
    result = {"args": {k: str(v) for k, v in vars(a).items()}, "kernels": [], "clean": clean,
              "more": more, "timed": {"wall_s": twall, "cpu_s": tcpu}}
    for key, values in table.iterrows():
        spread = values.max() / values.min() - 1
        false = sum(v[key][0] != "same" for v in aa)
        caught = [v[key] for v in ab if key in v]
        ratio = [r for verdict, r in caught if r is not None]
        hits = f"{sum(v == 'slower' for v, _ in caught)}/{len(caught)}" if key[1] == "torch" else "-"
        ratios = f"{min(ratio):.3f}..{max(ratio):.3f}" if ratio and key[1] == "torch" else "-"
        print(f"| {key[0]} | {key[1]} | {values.iloc[0]:,.0f} | {spread:.3%} | "
              f"{len(aa) - false}/{len(aa)} same | {hits} | {ratios} |")
        result["kernels"].append({"layer": key[0], "backend": key[1], "counts": list(values),
                                  "largest_difference": spread, "aa_not_same": false,
                                  "more_work": caught})

    print("\n### Where an invocation's time goes (median over the clean invocations)\n")
    frame = pd.DataFrame([{"wall": r["wall_s"], "cpu": r["cpu_s"],
                           **{f"{k} wall": v for k, v in r["split_s"].items()},
                           **{f"{k} cpu": v for k, v in r["split_cpu_s"].items()}} for r in clean])
    med = frame.median()
    rest = med["wall"] - sum(med[f"{p} wall"] for p in ("startup", "check", "warmup", "counted"))
    print("| | wall s | CPU s |\n| --- | ---: | ---: |")
    print(f"| whole invocation | {med['wall']:.1f} | {med['cpu']:.1f} |")
    for phase, what in (("startup", "worker start-up under valgrind (Python, torch, pwbench)"),
                        ("check", "make + verify, every kernel"), ("warmup", "warm-up calls"),
                        ("counted", "counted calls (instrumented, cache simulation)")):
        print(f"| {what} | {med[f'{phase} wall']:.1f} | {med[f'{phase} cpu']:.1f} |")
    print(f"| main process (build, references, tables) and teardown | {rest:.1f} | "
          f"{med['cpu'] - sum(med[f'{p} cpu'] for p in ('startup', 'check', 'warmup', 'counted')):.1f} |")
    print(f"\nload average during the clean invocations: "
          f"{min(r['load'] for r in clean):.1f}..{max(r['load'] for r in clean):.1f}")

    print("\n### Instructions per call next to time per call (native, 1 thread, AVX2 caps)\n")
    print("| layer | backend | MFLOP | instructions per call | instructions per FLOP | "
          "time per call | est. cycles per call |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    first = pd.read_parquet(Path(clean[0]["dir"]) / "records.parquet").set_index(["layer", "backend"])
    for key, r in first.iterrows():
        t = timed.loc[key, "median_s"] if key in timed.index else float("nan")
        print(f"| {key[0]} | {key[1]} | {r['flops'] / 1e6:.2f} | {r['instructions']:,.0f} | "
              f"{r['instructions_per_flop']:.2f} | {t * 1e6:.1f} us | {r['estimated_cycles']:,.0f} |")
    print(f"\ntimed run: {twall:.0f} s wall, {tcpu:.0f} s CPU")
    (a.work / "study.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"\nraw: {a.work / 'study.json'}")


if __name__ == "__main__":
    main()
