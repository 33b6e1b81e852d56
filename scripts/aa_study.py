"""Do pwbench's regression verdicts hold across processes and invocations? Real runs here.

A/A: `pairs + baseline_runs` separate `pwbench run` invocations of one suite with no change in
between; run i + k is compared with the k runs before it (`--baseline-runs k`, default 1: each
run with the one before), a baseline whose spread between invocations enters the verdict when
k >= 2 (`pwbench compare BASE... NEW`). Done once with `--processes 1` and once with each other
process count asked for. A/B: each baseline compared with a run of a torch backend that does
about 10 % more work on every call (scripts/more_work_backend.py). Prints, per process count:
pairs whose gate failed with no change (false regressions), uncertain kernels, pairs whose gate
caught the slowdown (any kernel slower; every kernel slower), and the wall time of one run.

    python scripts/aa_study.py                        # 10 pairs, --processes 1 and 3, default suite
    python scripts/aa_study.py --pairs 3 --processes 3 --suite default --threads 2
    python scripts/aa_study.py --pairs 10 --processes 3 --no-single --baseline-runs 5

Use a quiet machine (nothing else running): this is what a CI gate would see.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
SLOW = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from pwbench import backends as b; "
        "b.register(b.BackendInfo('torch', 'more_work_backend', ('torch',), 'torch', "
        "'torch doing 10 % more work')); from pwbench.cli import main; sys.exit(main(sys.argv[1:]))")


def pwbench(*args, slow=False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", SLOW, str(SCRIPTS)] if slow else \
        [str(Path(sys.executable).parent / "pwbench")]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True)


def run(out: Path, args, processes: int, slow=False) -> float:
    start = time.monotonic()
    proc = pwbench("run", "--suite", args.suite, "--threads", args.threads, "--processes",
                   processes, "--output", out, slow=slow)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"pwbench run failed: {proc.stderr.strip()}")
    return time.monotonic() - start


def verdicts(bases: list[Path], new: Path) -> list[str]:
    proc = pwbench("compare", *bases, new, "--format", "json")
    if proc.returncode not in (0, 1):
        raise SystemExit(f"pwbench compare failed: {proc.stderr.strip()}")
    return [r["verdict"] for r in json.loads(proc.stdout)["rows"]]


def study(work: Path, args, processes: int) -> dict:
    k, clean, seconds = args.baseline_runs, [], []
    for i in range(args.pairs + k):
        clean.append(work / f"p{processes}_clean{i}")
        seconds.append(run(clean[-1], args, processes))
        print(f"  processes {processes}: clean run {i + 1}/{args.pairs + k} "
              f"({seconds[-1]:.0f} s)", flush=True)
    aa = [verdicts(clean[i:i + k], clean[i + k]) for i in range(args.pairs)]
    caught = []
    for i in range(args.pairs):
        slow = work / f"p{processes}_slow{i}"
        run(slow, args, processes, slow=True)
        caught.append(verdicts(clean[i:i + k], slow))
        print(f"  processes {processes}: slow run {i + 1}/{args.pairs}", flush=True)
    flat = [v for pair in aa for v in pair]
    return {"processes": processes, "pairs": args.pairs,
            "false_pairs": sum("slower" in pair for pair in aa),
            "false_kernels": flat.count("slower"), "kernels": len(flat),
            "uncertain": flat.count("uncertain") / len(flat), "same": flat.count("same") / len(flat),
            "gate_caught": sum("slower" in pair for pair in caught),
            "caught_pairs": sum(all(v == "slower" for v in pair) for pair in caught),
            "caught_kernels": sum(v == "slower" for pair in caught for v in pair),
            "slow_kernels": sum(len(pair) for pair in caught),
            "run_s": sorted(seconds)[len(seconds) // 2]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--processes", type=int, action="append",
                        help="process counts to study besides 1 (default: 3)")
    parser.add_argument("--suite", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--no-single", action="store_true", help="skip --processes 1")
    parser.add_argument("--baseline-runs", type=int, default=1, metavar="K",
                        help="compare each run with the K runs before it (default 1)")
    args = parser.parse_args()
    counts = [*([] if args.no_single else [1]), *(args.processes or [3])]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        rows = [study(work, args, p) for p in counts]
    print(f"\nsuite {args.suite}, {args.threads} threads, {args.pairs} pairs, default threshold, "
          f"baseline of {args.baseline_runs} run(s)")
    print(f"{'processes':>9} {'A/A pairs with a false regression':>34} {'false kernels':>14} "
          f"{'uncertain':>10} {'same':>6} {'10 % slower: gate failed':>25} "
          f"{'every kernel':>13} {'kernels caught':>15} {'run (median)':>13}")
    for r in rows:
        print(f"{r['processes']:>9} {r['false_pairs']:>27} of {r['pairs']:<4} "
              f"{r['false_kernels']:>6} of {r['kernels']:<5} {r['uncertain']:>9.0%} {r['same']:>6.0%} "
              f"{r['gate_caught']:>18} of {r['pairs']:<4} {r['caught_pairs']:>6} of {r['pairs']:<4} "
              f"{r['caught_kernels']:>7} of {r['slow_kernels']:<5} {r['run_s']:>11.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
