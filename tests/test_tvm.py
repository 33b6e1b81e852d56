"""TVM backends: every layer kind compiles and matches the reference exactly; tuning databases are
written, reused without tuning, and refused when foreign or corrupted. One tiny tuning run (a few
trials on an 8x8 depthwise layer in the structured space, ~15 s on 2 cores) is shared by the
database tests. The structured space itself: tests/test_spaces.py."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pwbench import backends, cli, targets
from pwbench.measure import verify
from pwbench.backends.base import Options
from pwbench.errors import UserError
from pwbench.workloads.spec import ConvSpec

HAVE_TVM = importlib.util.find_spec("tvm") is not None
needs_tvm = pytest.mark.skipif(not HAVE_TVM, reason="apache-tvm is not installed")
pytestmark = [pytest.mark.cpu, pytest.mark.tvm]
TRIALS = 4

LAYERS = {
    "pointwise": ConvSpec(1, 8, 16, 6, 6),
    "depthwise": ConvSpec(1, 8, 8, 7, 7, 3, 1, 1, groups=8),
    "depthwise_multiplier": ConvSpec(1, 4, 8, 7, 7, 3, 1, 1, groups=4),
    "grouped": ConvSpec(1, 8, 12, 7, 7, 3, 1, 1, groups=2),
    "full": ConvSpec(1, 6, 8, 7, 7, 3, 1, 1),
    "strided": ConvSpec(1, 6, 8, 9, 9, 3, 2, 1),
    "strided_depthwise": ConvSpec(1, 8, 8, 9, 9, 3, 2, 1, groups=8),
    "dilated": ConvSpec(1, 6, 8, 9, 9, 3, 1, 2, 2),
    "padded_asymmetric": ConvSpec(1, 6, 8, 9, 8, (1, 7), 1, (0, 3)),
    "unpadded_5x5": ConvSpec(1, 4, 8, 9, 9, 5),
}

TUNE_SUITE = """[suite]
description = "tiny tuning test"
batch = 1

[[layer]]
name = "tiny.dw"
in_channels = 16
depthwise = true
size = 8
kernel_size = 3
padding = 1
"""


def test_unavailable_tvm_says_why(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "tvm" else real(n, *a))
    for name in ("tvm", "tvm-tuned"):
        reason = backends.unavailable_reason(name)
        assert reason and "needs tvm" in reason and "pip install" in reason
    with pytest.raises(UserError, match="backend tvm is unavailable: needs tvm"):
        backends.backend_class("tvm", targets.resolve("cpu"))


@pytest.mark.cli
def test_tune_without_tvm_is_one_line_and_exit_2(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "tvm" else real(n, *a))
    assert cli.main(["tune", "--suite", "default"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "pwbench: error: backend tvm-tuned is unavailable: needs tvm: pip install -e '.[tvm]'"


@needs_tvm
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_untuned_matches_reference_exactly(name, layout, tmp_path):
    from pwbench.backends import tvm_backend

    spec = LAYERS[name].replace(layout=layout)
    backend = tvm_backend.Backend(targets.resolve("x86"), Options(threads=2, work_dir=tmp_path))
    kernel = backend.build(spec).make()  # exported, then loaded as a worker would
    check = verify.check(kernel, spec)  # exact inputs must match the float64 reference bit for bit
    assert check.verdict == "passed", check.detail
    assert kernel.result().shape == spec.output_shape


@needs_tvm
def test_host_target_names_the_cpu():
    from pwbench.tvm_bridge import tvm_targets

    target = targets.resolve("x86").tvm_target(3)
    assert target["kind"] == "llvm" and target["num-cores"] == 3
    assert target["mcpu"] == tvm_targets.host_cpu() and target["mcpu"] not in ("", "native", "generic")
    given = targets.resolve('{"kind": "llvm", "mcpu": "skylake-avx512"}')
    assert given.tvm_target(2)["mcpu"] == "skylake-avx512"
    assert targets.resolve("llvm -mcpu=znver4").tvm_target(2)["mcpu"] == "znver4"
    with pytest.raises(UserError, match="TVM rejects target"):
        targets.resolve('{"kind": "llvm", "no-such-option": 1}').tvm_target(2)


@needs_tvm
@pytest.mark.parametrize("given", ["llvm -mcpu=bogus", '{"kind": "llvm", "mcpu": "bogus"}'])
def test_a_bogus_x86_cpu_is_refused_not_built_generic(given):
    """LLVM builds generic code for a CPU it does not know, without a word: refused instead."""
    with pytest.raises(UserError, match="LLVM does not know the CPU 'bogus'"):
        targets.resolve(given).tvm_target(2)


def test_a_cross_target_resolves_to_a_board_not_the_host():
    board = targets.resolve('{"kind": "llvm", "mtriple": "aarch64-linux-gnu"}')
    assert "tvm" in board.stacks and board.torch_device is None
    assert "RPC tracker" in board.run_problem()


# ---- tuning databases ------------------------------------------------------------------------
def _run(tmp: Path, out: str, *extra: str) -> tuple[int, pd.DataFrame | None]:
    code = cli.main(["run", "--suite", str(tmp / "tiny.toml"), "--threads", "2",
                     "--trials", str(TRIALS), "--tuning-dir", str(tmp / "db"), "--output",
                     str(tmp / out), "--warmup-ms", "5", "--sample-ms", "20", *extra])
    records = tmp / out / "records.parquet"
    return code, pd.read_parquet(records) if records.exists() else None


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One tiny tuning run through the CLI, then the same run again."""
    if not HAVE_TVM:
        pytest.skip("apache-tvm is not installed")
    tmp = tmp_path_factory.mktemp("tvm_tuning")
    (tmp / "tiny.toml").write_text(TUNE_SUITE)
    mp = pytest.MonkeyPatch()
    for var in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "MKL_NUM_THREADS"):  # restored afterwards
        mp.setenv(var, "2")
    first = _run(tmp, "first", "--backend", "tvm-tuned")
    (database,) = (tmp / "db").iterdir()
    records_after_first = (database / "database_tuning_record.json").read_text()
    second = _run(tmp, "second", "--backend", "tvm-tuned")
    yield {"tmp": tmp, "db": database, "first": first, "second": second,
           "records_after_first": records_after_first}
    mp.undo()


def test_first_run_tunes_and_writes_a_database(tuned):
    code, rows = tuned["first"]
    assert code == 0
    assert list(rows["variant"]) == ["structured", "structured-blocked"]
    row = rows.iloc[0]
    assert (row["backend"], row["tuning"], row["check"]) == ("tvm-tuned", "tuned", "passed")
    assert row["tuning_trials"] == TRIALS and row["tuning_s"] > 0 and row["space"] == "structured"
    assert (rows["check"] == "passed").all() and list(rows["tvm_layout"]) == ["NCHW", "NCHWc"]
    assert json.loads(row["target_string"])["mcpu"]
    stored = json.loads((tuned["db"] / "fingerprint.json").read_text())
    assert stored["target_string"] == row["target_string"] and stored["tvm"] and stored["cpu_model"]
    assert (tuned["db"] / "database_workload.json").stat().st_size > 0


def test_tuning_curve_is_recorded(tuned):
    curve = pd.read_csv(tuned["tmp"] / "first" / "tuning_curves.csv")
    assert list(curve.columns) == ["spec_id", "layer", "backend", "target", "trial", "elapsed_s",
                                   "best_s", "variant"]
    assert 0 < len(curve) <= TRIALS and curve["trial"].max() <= TRIALS
    assert set(curve["variant"]) == {"structured"}
    assert curve["best_s"].is_monotonic_decreasing and (curve["best_s"] > 0).all()
    assert curve["elapsed_s"].is_monotonic_increasing and (curve["elapsed_s"] > 0).all()
    assert set(curve["layer"]) == {"tiny.dw"}


def test_second_run_reuses_the_database(tuned):
    code, rows = tuned["second"]
    assert code == 0
    row = rows.iloc[0]
    assert (row["tuning"], row["check"], row["tuning_trials"]) == ("database", "passed", TRIALS)
    # nothing was tuned: MetaSchedule's records are as the first run left them
    assert (tuned["db"] / "database_tuning_record.json").read_text() == tuned["records_after_first"]
    assert (tuned["tmp"] / "second" / "tuning_curves.csv").exists()


def test_cli_runs_torch_tvm_and_tuned_side_by_side(tuned):
    tmp = tuned["tmp"]
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "pwbench"), "run", "--suite", str(tmp / "tiny.toml"),
         "--backend", "torch,tvm,tvm-tuned", "--threads", "2", "--trials", str(TRIALS),
         "--tuning-dir", str(tmp / "db"), "--output", str(tmp / "cli"), "--warmup-ms", "5",
         "--sample-ms", "20"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tiny.dw NCHW [tvm-tuned structured]: structured space: schedule from the tuning database" in proc.stdout
    rows = pd.read_parquet(tmp / "cli" / "records.parquet")
    assert list(rows["backend"]) == ["torch", "tvm", "tvm-tuned", "tvm-tuned"]
    assert list(rows["variant"]) == ["", "", "structured", "structured-blocked"]
    assert (rows["check"] == "passed").all() and rows["median_s"].notna().all()
    assert rows["target_string"].iloc[1] == rows["target_string"].iloc[2] != ""
    assert "TVM vs the best library per kind" in proc.stdout  # both speedups at the end
    assert "suite total" in proc.stdout
    assert (rows["threads"] == 2).all()


def test_tune_command_reports_layers_already_tuned(tuned, capsys):
    tmp = tuned["tmp"]
    code = cli.main(["tune", "--suite", str(tmp / "tiny.toml"), "--threads", "2",
                     "--trials", str(TRIALS), "--tuning-dir", str(tmp / "db")])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("│ tiny.dw"))
    assert code == 0 and row.rstrip(" │").endswith("database"), out  # its "this run" column


@pytest.mark.parametrize("field, value", [("target_string", '{"kind":"llvm","mcpu":"cortex-a72"}'),
                                          ("tvm", "0.19.0")])
def test_foreign_database_is_refused(tuned, field, value, capsys):
    foreign = tuned["tmp"] / f"foreign_{field}"
    shutil.copytree(tuned["db"], foreign)
    stored = json.loads((foreign / "fingerprint.json").read_text())
    (foreign / "fingerprint.json").write_text(json.dumps(stored | {field: value}))
    code = cli.main(["run", "--suite", str(tuned["tmp"] / "tiny.toml"), "--backend", "tvm-tuned",
                     "--threads", "2", "--tuning-dir", str(foreign),
                     "--output", str(tuned["tmp"] / f"refused_{field}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "made for another setup and is not applied" in err and value in err


@pytest.mark.parametrize("damaged", ["database_tuning_record.json", "database_workload.json",
                                     "layers.json", "fingerprint.json"])
def test_corrupted_database_is_one_clear_error(tuned, damaged, capsys):
    broken = tuned["tmp"] / f"broken_{damaged}"
    shutil.copytree(tuned["db"], broken)
    text = (broken / damaged).read_text()
    (broken / damaged).write_text(text[: len(text) // 2 - 3])  # cut inside a line
    code = cli.main(["run", "--suite", str(tuned["tmp"] / "tiny.toml"), "--backend", "tvm-tuned",
                     "--threads", "2", "--tuning-dir", str(broken),
                     "--output", str(tuned["tmp"] / f"out_{damaged}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "corrupted" in err and "Traceback" not in err


def test_spent_budget_uses_the_database_or_says_why(tuned):
    from pwbench.backends import tvm_tuned_backend
    from pwbench.backends.tuning_options import TuningOptions

    def backend(space: str):
        tuning = TuningOptions(trials=10 * TRIALS, tune_minutes=1e-9, tuning_dir=tuned["db"],
                               spaces=(space,), blocked=False)  # more trials asked, no time left
        return tvm_tuned_backend.Backend(targets.resolve("cpu"), Options(
            threads=2, work_dir=tuned["tmp"] / f"spent_{space}", extra={TuningOptions.group: tuning}))

    (tiny,) = _suite_specs(tuned["tmp"])
    structured = backend("structured")
    assert structured.build(tiny).columns["tuning"] == "database"
    # a structured layer never tuned gets the structure's first point, untuned (then verified)
    untuned = structured.build(LAYERS["pointwise"])
    assert untuned.columns["tuning"] == "untuned" and "knobs" in untuned.columns
    with pytest.raises(RuntimeError, match="--tune-minutes budget was spent"):
        backend("default").build(LAYERS["pointwise"])


@needs_tvm
def test_tvm_runs_the_thread_count_given():
    import tvm

    from pwbench.tvm_bridge import runtime

    runtime.set_threads(1)
    assert tvm.get_global_func("runtime.NumThreads")() == 1
    runtime.set_threads(2)
    assert tvm.get_global_func("runtime.NumThreads")() == 2


def _suite_specs(tmp: Path):
    from pwbench.workloads import suites

    return suites.load(str(tmp / "tiny.toml")).layers


def test_tuning_logs_stay_off_the_console(tmp_path):
    """MetaSchedule sets its console logger to DEBUG on every tune_tir: tuning a second layer in
    the same process must still keep its per-batch logs in the database's logs/, off stdout."""
    suite = tmp_path / "two.toml"
    suite.write_text(TUNE_SUITE + '\n[[layer]]\nname = "tiny.pw"\nin_channels = 8\n'
                                  'out_channels = 8\nsize = 6\n')
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "pwbench"), "tune", "--suite", str(suite), "--threads",
         "2", "--trials", "2", "--tuning-dir", str(tmp_path / "db")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tiny.pw" in proc.stdout and "task_scheduler" not in proc.stdout + proc.stderr
    (logs,) = (tmp_path / "db").glob("*/logs")
    assert any("task_scheduler" in p.read_text() for p in logs.iterdir())
