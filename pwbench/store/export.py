"""`pwbench export RUN_DIR --format pytest-benchmark`: a run as the JSON pytest-benchmark saves, so
`pytest-benchmark compare` (and dashboards that read its files) show pwbench results.

One benchmark per kernel (spec id, backend, target), named `<layer>[<backend>-<target>]` after the
first layer that uses the shape; its raw per-call samples are the benchmark's `data`, `iterations`
is the calls per sample, and the statistics follow pytest-benchmark's definitions (its quartile
method, Tukey and stddev outlier counts), so they match what it would compute from the same data.
Kernels that were not timed (failed check, could not run) are left out, as pytest-benchmark leaves
out benchmarks that errored.

Rows of the instruction clock (`run --clock instructions`) carry their clock: the benchmark is
named `<layer>[<backend>-<target>-instructions]` (so pytest-benchmark never pairs it with a
timed one), its `data` are the instructions of each counted call, `options.timer` says
"callgrind instructions" and `extra_info` holds clock, unit and the cache figures. A tool reading
these files shows the counts in its time units: they are counts, not seconds.
"""

from __future__ import annotations

import json
import statistics
from bisect import bisect_left, bisect_right
from pathlib import Path

from pwbench.errors import UserError
from pwbench.store import results

PYTEST_BENCHMARK_VERSION = "5.1.0"  # the file layout written; read by 3.x to 5.x


def quartiles(data: list[float]) -> tuple[float, float]:
    """Q1 and Q3 as pytest-benchmark computes them (Wikipedia's methods 2 and 3)."""
    d, n = sorted(data), len(data)
    if n == 1:
        return d[0], d[0]
    if n % 2 == 0:
        return statistics.median(d[: n // 2]), statistics.median(d[n // 2:])
    k, r = n // 4, n % 4
    if r == 1:
        return 0.25 * d[k - 1] + 0.75 * d[k], 0.75 * d[3 * k] + 0.25 * d[3 * k + 1]
    return 0.75 * d[k] + 0.25 * d[k + 1], 0.25 * d[3 * k + 1] + 0.75 * d[3 * k + 2]


def stats(data: list[float], iterations: int) -> dict:
    d = sorted(data)
    mean = statistics.mean(d)
    stddev = statistics.stdev(d) if len(d) > 1 else 0.0
    q1, q3 = quartiles(d)
    iqr = q3 - q1
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    std_out = sum(not mean - stddev <= v <= mean + stddev for v in d)
    iqr_out = sum(not low <= v <= high for v in d)
    total = sum(d)
    return {"min": d[0], "max": d[-1], "mean": mean, "stddev": stddev, "rounds": len(d),
            "median": statistics.median(d), "iqr": iqr, "q1": q1, "q3": q3,
            "iqr_outliers": iqr_out, "stddev_outliers": std_out, "outliers": f"{std_out};{iqr_out}",
            "ld15iqr": d[bisect_left(d, low)], "hd15iqr": d[bisect_right(d, high) - 1],
            "ops": len(d) / total if total else 0, "total": total, "data": list(data),
            "iterations": int(iterations)}


def benchmark(row, layers: list[str], suite: str, budget: dict) -> dict:
    counted = results.counted(row)
    param = f"{row['backend']}-{row['target']}" + ("-instructions" if counted else "")
    name = f"{layers[0]}[{param}]"
    extra = {"spec_id": row["spec_id"], "layers": layers, "kind": row["kind"],
             "flops": int(row["flops"]), "check": row["check"], "threads": int(row["threads"]),
             "clock": row.get("clock", "host")}
    if counted:
        extra |= {"unit": "instructions per call"} | {
            c: float(row[c]) for c in ("l1_misses", "ll_misses", "estimated_cycles") if c in row}
        options = {"timer": "callgrind instructions", "warmup_ms": None, "sample_ms": None,
                   "min_time": None}
        data = [float(v) for v in row["samples_instructions"]]
    else:
        options = {"timer": "perf_counter", "warmup_ms": budget.get("warmup_ms"),
                   "sample_ms": budget.get("sample_ms"), "min_time": budget.get("min_block_s")}
        data = [float(s) for s in row["samples_s"]]
    return {
        "group": suite, "name": name, "fullname": f"pwbench/{suite}::{name}",
        "params": {"backend": row["backend"], "target": row["target"]}, "param": param,
        "extra_info": extra, "options": options,
        "stats": stats(data, row["number"]),
    }


def _measured(row) -> bool:
    values = row["samples_instructions"] if results.counted(row) else row["samples_s"]
    return values is not None and len(values) > 0


def to_pytest_benchmark(meta: dict, records) -> dict:
    benchmarks = []
    for _, group in records.groupby(list(results.KERNEL_KEY), sort=False, dropna=False):
        row = group.iloc[0]
        if _measured(row):
            layers = list(dict.fromkeys(map(str, group["layer"])))
            benchmarks.append(benchmark(row, layers, str(row["suite"]), meta.get("budget") or {}))
    commit = str(meta.get("git_commit") or "")
    return {
        "machine_info": {"node": meta.get("hostname", ""), "processor": meta.get("cpu_model", ""),
                         "machine": meta.get("machine", ""), "python_version": meta.get("python", ""),
                         "python_implementation": "CPython", "system": meta.get("platform", ""),
                         "cpu": {"brand_raw": meta.get("cpu_model", ""), "count": meta.get("cores"),
                                 "flags": meta.get("cpu_flags", [])},
                         "pwbench": {k: meta.get(k) for k in ("fingerprint", "threads", "target",
                                                              "versions", "suite")}},
        "commit_info": {"id": commit.removesuffix("-dirty"), "dirty": commit.endswith("-dirty"),
                        "project": "pwbench"},
        "benchmarks": benchmarks,
        "datetime": meta.get("utc", ""),
        "version": PYTEST_BENCHMARK_VERSION,
    }


def export(run_dir: Path, fmt: str, out: Path | None) -> tuple[Path, list[str]]:
    """Write the run in `fmt`; returns the file and warnings (e.g. the run was cut short)."""
    if fmt != "pytest-benchmark":
        raise UserError(f"unknown export format {fmt!r}: choose pytest-benchmark")
    run = results.load_run(Path(run_dir))
    data = to_pytest_benchmark(run.meta, run.records)
    if not data["benchmarks"]:
        raise UserError(f"{run_dir}: no kernel was timed, nothing to export")
    out = Path(out) if out else Path(run_dir) / "pytest-benchmark.json"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2))
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out, run.warnings
