"""The instruction clock (`pwbench run --clock instructions`, measure/instructions.py): callgrind's
output read right, counts compared by a plain threshold and never with times, bad settings and a
missing valgrind refused in one line; then real runs: two separate invocations of one tiny suite
(torch, TVM untuned and tuned) agree within the noise floor, a torch backend doing 10 % more work
is caught by compare, and a kernel valgrind cannot decode is an error row, not a hang.

The real runs need valgrind (.ci/run installs it) and cost about three valgrind processes with
torch in them (~15 s CPU each) plus one tiny tuning; they share one module fixture."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import PWBENCH
from runs_helper import META, row, write_run
from pwbench.analysis import compare, compare_output
from pwbench.errors import UserError
from pwbench.measure import instructions
from pwbench.pipeline import runner
from pwbench.store import export, history, results

HAVE_VALGRIND = shutil.which("valgrind") is not None
HAVE_TVM = importlib.util.find_spec("tvm") is not None
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SUITE = """
[suite]
description = "instruction clock tests: a pointwise and a depthwise conv"
[[layer]]
name = "pw"
in_channels = 32
out_channels = 64
size = 28
[[layer]]
name = "dw"
in_channels = 32
depthwise = true
size = 14
kernel_size = 3
padding = 1
"""
# A callgrind file as valgrind 3.19 writes it with --combine-dumps=yes (cut to what is read):
# the termination part's `summary:` has underflowed after ZERO_STATS; `totals:` is right.
CALLGRIND = """# callgrind format
version: 1
creator: callgrind-3.19.0

part: 1
desc: Trigger: Client Request: k0#0
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
summary: 900 1 1 1 1 1 1 1 1
fn=(1) main
0 1000 300 200 10 20 5 2 3
totals: 1000 300 200 10 20 5 2 3 1

part: 2
desc: Trigger: Client Request: k0#1
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
summary: 990 1 1
totals: 990 300 200 1 2

part: 3
desc: Trigger: Program termination
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
summary: 18446744073702554360 1 1
totals: 17 1 1
"""


# ---- reading callgrind's output ----------------------------------------------------------------

@pytest.mark.unit
def test_parts_are_read_from_their_totals_with_trailing_zeros_filled(tmp_path):
    path = tmp_path / "cg.out"
    path.write_text(CALLGRIND)
    parts, end = instructions.read_parts(path)
    assert [p.trigger for p in parts] == ["Client Request: k0#0", "Client Request: k0#1",
                                         "Program termination"]
    assert parts[0].events["Ir"] == 1000 and parts[2].events["Ir"] == 17  # not summary's 2**64
    assert parts[1].events == {"Ir": 990, "Dr": 300, "Dw": 200, "I1mr": 1, "D1mr": 2, "D1mw": 0,
                               "ILmr": 0, "DLmr": 0, "DLmw": 0}
    assert end == path.stat().st_size


@pytest.mark.unit
def test_reading_goes_on_from_the_last_complete_part(tmp_path):
    path = tmp_path / "cg.out"
    first, _, rest = CALLGRIND.partition("part: 2")
    path.write_text(first + "part: 2\ndesc: Trigger: Client Request: k0#1\nevents: Ir\n")
    parts, end = instructions.read_parts(path)
    assert [p.trigger for p in parts] == ["Client Request: k0#0"]  # the half-written part waits
    path.write_text(CALLGRIND)
    later, _ = instructions.read_parts(path, end)
    assert [p.trigger for p in later] == ["Client Request: k0#1", "Program termination"]


@pytest.mark.unit
def test_per_call_figures_and_the_cycle_estimate():
    events = {"Ir": 1000, "Dr": 300, "Dw": 200, "I1mr": 10, "D1mr": 20, "D1mw": 5, "ILmr": 2,
              "DLmr": 3, "DLmw": 1}
    # KCachegrind's CEst with cache simulation only: Ir + 10 L1 misses + 100 LL misses
    assert instructions.per_call(events) == {"instructions": 1000, "l1_misses": 35, "ll_misses": 6,
                                             "estimated_cycles": 1000 + 350 + 600}


@pytest.mark.unit
def test_a_crash_under_valgrind_is_explained_in_one_line():
    log = """==7== Callgrind, a call-graph generating cache profiler
vex amd64->IR: unhandled instruction bytes: 0x62 0xF2 0xFD 0x8 0xB8 0x4 0x8E 0x49
==7== valgrind: Unrecognised instruction at address 0x4e2b2c0.
==7== Process terminating with default action of signal 4 (SIGILL)
==7==  Illegal opcode at address 0x4E2B2C0
==7==    at 0x4E2B2C0: main_compute_ (IRModule.CodeGenLLVM:0)
==7==    by 0x4E2A000: __tvm_ffi_main (in /tmp/k.so)
"""
    reason = instructions.crash_reason(log)
    assert "0x62 0xF2 0xFD 0x8" in reason and "AVX-512" in reason and "main_compute_" in reason
    assert "\n" not in reason and instructions.crash_reason("") == ""


# ---- rows and verdicts -------------------------------------------------------------------------

def counted_run(directory: Path, counts: dict[str, float], seed: int = 0, processes: int = 1,
                spread: float = 0.001) -> Path:
    """A run of instruction rows: per layer `counts[layer]` instructions per call, each of 10
    calls per process off by up to `spread`."""
    rng = np.random.default_rng(seed)
    writer = results.RunWriter(directory, copy.deepcopy(META) | {
        "clock": "instructions", "utc": f"2026-11-23T10:00:{seed:02d}+00:00"})  # one run each
    for layer in ("pw", "dw"):
        for p in range(processes):
            calls = [int(counts[layer] * (1 + rng.uniform(-spread, spread))) for _ in range(10)]
            line = row(layer, []) | {"clock": "instructions", "process": p, "number": 1}
            line |= {f"samples_{c}": calls for c in instructions.COLUMNS}
            writer.add(line)
    writer.finish()
    return directory


@pytest.mark.unit
def test_counted_rows_pool_their_calls_and_hold_no_time(tmp_path):
    run = results.load_run(counted_run(tmp_path / "a", {"pw": 1000, "dw": 5000}, processes=2))
    pw = run.records.set_index("layer").loc["pw"]
    assert len(pw["samples_instructions"]) == 20 and list(pw["samples_process"]) == [0] * 10 + [1] * 10
    assert pw["instructions"] == np.median(pw["samples_instructions"]) and pw["n_processes"] == 2
    assert pw["instructions_per_flop"] == pw["instructions"] / pw["flops"]
    assert math.isnan(pw["median_s"]) and results.was_timed(pw) and results.counted(pw)
    assert not any(results.failed(r) for r in run.records.to_dict("records"))


@pytest.mark.unit
@pytest.mark.parametrize("ratio, verdict", [(1.0, "same"), (1.019, "same"), (1.021, "slower"),
                                            (1 / 1.021, "faster"), (1.09, "slower")])
def test_counts_get_a_plain_threshold_on_their_ratio(tmp_path, ratio, verdict):
    base = counted_run(tmp_path / "base", {"pw": 100_000, "dw": 50_000}, spread=0)
    new = counted_run(tmp_path / "new", {"pw": 100_000 * ratio, "dw": 50_000}, seed=1, spread=0)
    result = compare.compare_runs(base, new, 0.05)
    rows = {r.layer: r for r in result.rows}
    assert rows["pw"].verdict == verdict and rows["dw"].verdict == "same"
    assert rows["pw"].ratio == pytest.approx(ratio, rel=1e-4) and math.isnan(rows["pw"].ci_low)
    assert "instruction counts: threshold 2.0%" in compare_output.summary_line(result)
    assert bool(result.regressions) == (verdict == "slower")


@pytest.mark.unit
def test_a_count_never_pairs_with_a_time(tmp_path):
    counted = counted_run(tmp_path / "counted", {"pw": 1000, "dw": 5000})
    timed = write_run(tmp_path / "timed", {}, seed=1)
    with pytest.raises(UserError, match="BASE measured with clock host, NEW with instructions"):
        compare.compare_records(results.load_run(timed).records,
                                results.load_run(counted).records, 0.05)


@pytest.mark.unit
def test_counts_that_vary_between_processes_say_so(tmp_path):
    base = counted_run(tmp_path / "base", {"pw": 1000, "dw": 5000}, processes=3, spread=0.03)
    new = counted_run(tmp_path / "new", {"pw": 1000, "dw": 5000}, seed=2, processes=3, spread=0.03)
    notes = [r.note for r in compare.compare_runs(base, new, 0.05).rows]
    assert any("between processes of one run" in n for n in notes)


@pytest.mark.unit
def test_history_and_export_carry_the_clock(tmp_path):
    run = counted_run(tmp_path / "run", {"pw": 123_456, "dw": 5000}, spread=0)
    conn = history.connect(tmp_path / "h.sqlite")
    history.add(conn, run)
    trend = history.trend(conn, "pw")
    assert list(trend["clock"]) == ["instructions"] and trend["instructions"].iloc[0] == 123_456
    assert trend["vs_first"].iloc[0] == 1.0
    data = export.to_pytest_benchmark(results.load_run(run).meta, results.load_run(run).records)
    bench = {b["name"]: b for b in data["benchmarks"]}["pw[torch-cpu-instructions]"]
    assert bench["options"]["timer"] == "callgrind instructions"
    assert bench["extra_info"]["clock"] == "instructions" and bench["stats"]["median"] == 123_456


# ---- refusals, before anything runs ------------------------------------------------------------

@pytest.mark.cli
def test_without_valgrind_a_run_is_one_line_naming_the_package(pwbench, tmp_path):
    bin_only = {**os.environ, "PATH": str(Path(PWBENCH).parent)}  # python and pwbench, no valgrind
    proc = pwbench("run", "--clock", "instructions", "--output", tmp_path / "run", env=bin_only)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("pwbench: error: --clock instructions needs valgrind, which is "
                                   "not installed here: apt-get install valgrind (Debian/Ubuntu "
                                   "package 'valgrind')")
    assert not (tmp_path / "run").exists()


@pytest.mark.unit
@pytest.mark.parametrize("change, message", [
    ({"threads": 2}, "counts one thread"),
    ({"cache": "cold"}, "drop --cache cold"),
    ({"target": "cuda"}, "use --target cpu"),
    ({"kernels": Path("bundle")}, "cannot run a kernel bundle"),
    ({"clock": "cycles"}, "--clock must be one of time, instructions"),
])
def test_what_the_instruction_clock_cannot_count_is_refused(change, message):
    config = runner.RunConfig(**({"clock": "instructions", "threads": None, "processes": None}
                                 | change))
    with pytest.raises(UserError, match=message):
        runner.plan(config)


@pytest.mark.cpu
def test_the_instruction_clock_defaults_to_one_thread_and_one_process(tmp_path):
    if not HAVE_VALGRIND:
        pytest.skip("valgrind is not installed")
    plan = runner.plan(runner.RunConfig(clock="instructions", threads=None, processes=None,
                                        backends=("torch",), output=tmp_path / "run"))
    assert (plan.config.threads, plan.config.processes) == (1, 1)
    assert plan.target.facts()["isa_cap"]["env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    meta = runner.metadata(plan)
    assert meta["clock"] == "instructions" and meta["instruction_clock"]["valgrind"].startswith(
        "valgrind-")


@pytest.mark.unit
def test_what_a_counting_worker_holds_does_not_depend_on_the_output_path(tmp_path, monkeypatch):
    """Its heap, and so a torch op's count, follows the length of every path it holds: the run's
    scratch and callgrind's files have names of one length whatever --output is."""
    from pwbench import scratch

    monkeypatch.setenv("PWBENCH_CACHE_DIR", str(tmp_path / "cache"))
    short, long = scratch.new(), scratch.new()
    assert len(str(short)) == len(str(long)) and short != long
    valgrind = instructions.Valgrind("/usr/bin/valgrind", "valgrind-3.19.0", "/x/requests.so")
    workers = [instructions.ValgrindProcess(valgrind, work, "pass", 3) for work in (short, long)]
    assert len({len(" ".join(w.command)) for w in workers}) == 1
    assert len({len(str(w.out)) for w in workers}) == 1 and workers[0].out != workers[1].out


# ---- real runs under valgrind ------------------------------------------------------------------

def _pwbench(*args, more_work: bool = False, timeout: int = 900):
    """The CLI; more_work=True registers scripts/more_work_backend.py as 'torch'."""
    import subprocess

    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from pwbench import backends as b; "
            "b.register(b.BackendInfo('torch', 'more_work_backend', ('torch',), 'torch', "
            "'torch doing 10 % more work')); from pwbench.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    command = [sys.executable, "-c", code, str(SCRIPTS)] if more_work else [PWBENCH]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A and A2: two separate invocations of one suite (torch, tvm, tvm-tuned; the first tunes,
    the second reuses its database); B: the same suite with a torch doing 10 % more work."""
    if not (HAVE_VALGRIND and HAVE_TVM):
        pytest.skip("needs valgrind and apache-tvm")
    tmp = tmp_path_factory.mktemp("instructions")
    (tmp / "tiny.toml").write_text(SUITE)
    common = ["--suite", tmp / "tiny.toml", "--clock", "instructions", "--trials", "4",
              "--tuning-dir", tmp / "db"]
    done = {}
    for name, backends, more in (("a", "torch,tvm,tvm-tuned", False),
                                 ("a2", "torch,tvm,tvm-tuned", False),
                                 ("b", "torch,tvm", True)):
        proc = _pwbench("run", *common, "--backend", backends, "--output", tmp / name,
                        more_work=more)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        done[name] = tmp / name
    return done


def _rows(run_dir: Path) -> dict:
    frame = pd.read_parquet(run_dir / "records.parquet")
    return {(r["layer"], r["backend"] + (f" {r['variant']}" if r["variant"] else "")): r
            for r in frame.to_dict("records")}


@pytest.mark.cpu
@pytest.mark.tvm
def test_torch_and_tvm_kernels_are_checked_then_counted(runs):
    rows = _rows(runs["a"])
    # structured kernels too: their pre-packed weight passes through the C entry point
    kernels = ("torch", "tvm", "tvm-tuned structured", "tvm-tuned structured-blocked")
    assert set(rows) == {(layer, k) for layer in ("pw", "dw") for k in kernels}
    for r in rows.values():
        assert r["check"] == "passed" and r["clock"] == "instructions" and r["error"] == ""
        assert r["instructions"] > 10_000 and len(r["samples_instructions"]) == 10
        assert r["estimated_cycles"] >= r["instructions"] and math.isnan(r["median_s"])
        assert r["valgrind_counted_cpu_s"] > 0 and r["valgrind_startup_s"] > 0
    assert json.loads(rows[("pw", "tvm")]["target_string"])["mcpu"] == "haswell"  # no AVX-512
    assert rows[("pw", "tvm-tuned structured")]["tuning"] in ("tuned", "database")
    assert "reg_n=" in rows[("pw", "tvm-tuned structured")]["knobs"]
    # a TVM kernel is counted from C: the same count on every call
    for k in ("tvm", "tvm-tuned structured", "tvm-tuned structured-blocked"):
        assert len(set(rows[("dw", k)]["samples_instructions"])) == 1, k
    meta = json.loads((runs["a"] / "meta.json").read_text())
    assert meta["clock"] == "instructions" and meta["threads"] == 1
    assert meta["isa_cap"]["env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"


@pytest.mark.cpu
@pytest.mark.tvm
def test_two_invocations_agree_whatever_their_output_paths(runs):
    """a and a2 differ in the length of their run directories' names (the workers' paths do not:
    pwbench/scratch.py). TVM kernels count exactly the same; a torch op moves with its heap by
    less than the noise floor (repeats of one command move it too: measure/instructions.py)."""
    a, a2 = _rows(runs["a"]), _rows(runs["a2"])
    for key, r in a.items():
        difference = abs(a2[key]["instructions"] / r["instructions"] - 1)
        assert difference <= (0 if key[1].startswith("tvm") else instructions.NOISE_FLOOR), \
            (key, difference)
    proc = _pwbench("compare", runs["a"], runs["a2"], "--format", "json")
    assert proc.returncode == 0, proc.stdout
    assert {r["verdict"] for r in json.loads(proc.stdout)["rows"]} == {"same"}


@pytest.mark.cpu
@pytest.mark.tvm
def test_ten_percent_more_work_is_caught(runs):
    proc = _pwbench("compare", runs["a"], runs["b"], "--format", "json")
    assert proc.returncode == 1, proc.stdout
    rows = {(r["layer"], r["backend"]): r for r in json.loads(proc.stdout)["rows"]}
    assert rows[("pw", "torch")]["verdict"] == "slower"
    assert 1.05 < rows[("pw", "torch")]["ratio"] < 1.15
    assert rows[("pw", "tvm")]["verdict"] == rows[("dw", "tvm")]["verdict"] == "same"
    assert rows[("pw", "tvm-tuned")]["verdict"] == "missing"  # B did not run it


@pytest.mark.cpu
@pytest.mark.tvm
def test_a_kernel_valgrind_cannot_decode_is_an_error_row(tmp_path):
    if not (HAVE_VALGRIND and HAVE_TVM):
        pytest.skip("needs valgrind and apache-tvm")
    (tmp_path / "tiny.toml").write_text(SUITE)
    proc = _pwbench("run", "--suite", tmp_path / "tiny.toml", "--clock", "instructions",
                    "--backend", "tvm", "--filter", "layer == 'pw'", "--target",
                    '{"kind": "llvm", "mcpu": "znver4"}', "--output", tmp_path / "run",
                    timeout=300)
    assert proc.returncode == 1, proc.stderr  # a kernel could not run
    (r,) = pd.read_parquet(tmp_path / "run" / "records.parquet").to_dict("records")
    assert "killed by SIGILL" in r["error"] and "valgrind cannot decode" in r["error"]
    assert r["check"] == "" and math.isnan(r["instructions"])
