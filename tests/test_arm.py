"""ARM targets: `arm`, the named cores and `arm:CPU` resolve to boards with their TVM targets
(an unknown core is one line); every layer kind cross-compiles for aarch64 into an aarch64
library; and, in the emulated aarch64 board (`pwbench fleet local`: qemu-user running pwbench's
board server in an aarch64 Python with TVM's runtime), every layer kind passes the exact check,
NEON and SVE, and a fleet run marks the emulated rows and warns before ranking them.

The emulated board needs the aarch64 runtime of scripts/setup_aarch64_runtime.sh (cached in CI;
~16-25 s cold, 0.5 s warm); without it those tests are skipped with the reason, unless
PWBENCH_REQUIRE_AARCH64=1 (CI sets it) makes its absence a failure."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_pwbench
from pwbench import targets
from pwbench.errors import UserError
from pwbench.targets import board as boards_mod

HAVE_TVM = importlib.util.find_spec("tvm") is not None
needs_tvm = [pytest.mark.tvm, pytest.mark.skipif(not HAVE_TVM, reason="apache-tvm is not installed")]
needs_cross = pytest.mark.skipif(shutil.which(boards_mod.CROSS_COMPILER) is None,
                                 reason="aarch64-linux-gnu-gcc is not installed (Debian: "
                                        "gcc-aarch64-linux-gnu)")
EM_AARCH64 = 183  # ELF e_machine of AArch64


# ---- names and targets (no TVM needed) ---------------------------------------------------------
@pytest.mark.unit
def test_arm_names_resolve_to_boards_with_their_core():
    generic = targets.resolve("arm")
    assert generic.spec == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    assert generic.stacks == {"tvm"} and generic.torch_device is None
    assert generic.cross_compiler == "aarch64-linux-gnu-gcc" and not generic.can_evict
    v1 = targets.resolve("neoverse-v1")
    assert v1.spec["mcpu"] == "neoverse-v1" and "+sve" in v1.spec["mattr"]
    assert targets.resolve("cortex-a72").spec["mcpu"] == "cortex-a72"
    assert targets.resolve("arm:cortex-a710").spec["mcpu"] == "cortex-a710"
    assert "--rpc-tracker HOST:PORT --rpc-key KEY" in generic.run_problem()


@pytest.mark.unit
def test_with_an_endpoint_cpu_is_the_remote_box_and_the_name_says_which_key():
    endpoint = boards_mod.Endpoint("127.0.0.1", 9190, "rk3588")
    remote = targets.resolve("cpu", endpoint)
    assert remote.name == "cpu@rk3588" and remote.rpc is endpoint and remote.spec is None
    assert targets.resolve("neoverse-n1", endpoint).name == "neoverse-n1@rk3588"
    assert remote.kernel_timeout_s == endpoint.wait_s + endpoint.session_timeout_s + 30
    with pytest.raises(UserError, match="does not run through a TVM RPC tracker"):
        targets.resolve("cuda", endpoint)


@pytest.mark.unit
@pytest.mark.parametrize("text", ["bad", "host:", ":9190", "h:0", "h:70000", "h:p"])
def test_a_malformed_tracker_address_is_refused(text):
    with pytest.raises(UserError, match="expects HOST:PORT"):
        boards_mod.parse_address(text)


@pytest.mark.unit
def test_tracker_and_key_go_together():
    assert boards_mod.endpoint(None, None) is None
    for given in (("127.0.0.1:9190", None), (None, "k")):
        with pytest.raises(UserError, match="go together"):
            boards_mod.endpoint(*given)


@pytest.mark.unit
def test_a_missing_cross_compiler_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(boards_mod.shutil, "which", lambda name: None)
    assert "apt-get install gcc-aarch64-linux-gnu" in targets.resolve("arm").build_problem()


@pytest.mark.cli
def test_an_unknown_core_is_one_line_and_exit_2(pwbench):
    proc = pwbench("run", "--target", "cortex-z9")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "unknown target 'cortex-z9'" in proc.stderr and "neoverse-v1" in proc.stderr
    listed = pwbench("list", "targets").stdout
    assert all(core in listed for core in ("neoverse-n1", "neoverse-v1", "cortex-a72", "cortex-a76"))


@pytest.mark.cpu
@pytest.mark.parametrize("name", ["arm:bogus-cpu", '{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "bogus"}'])
def test_a_cpu_llvm_does_not_know_is_refused_not_built_generic(name):
    if not HAVE_TVM:
        pytest.skip("apache-tvm is not installed")
    with pytest.raises(UserError, match="LLVM does not know the CPU"):
        targets.resolve(name).tvm_target(1)


@pytest.mark.unit
def test_key_counts_reads_the_tracker_summary():
    if not HAVE_TVM:
        pytest.skip("apache-tvm is not installed")
    from pwbench.tvm_bridge import rpc

    summary = {"queue_info": {"x86": {"free": 1, "pending": 0}, "gone": {"free": 0, "pending": 0},
                              "wait": {"free": 0, "pending": 2}},
               "server_info": [{"key": "server:x86", "addr": [None, 1]},
                               {"key": "server:x86", "addr": [None, 2]},
                               {"key": "server:arm", "addr": [None, 3]}]}
    counts = rpc.key_counts(summary)
    assert counts["x86"] == {"total": 2, "free": 1, "pending": 0, "busy": 1}
    assert counts["arm"]["total"] == 1 and counts["arm"]["busy"] == 1
    assert "gone" not in counts and counts["wait"]["pending"] == 2


@pytest.mark.unit
def test_a_selection_report_warns_before_ranking_an_emulated_run(tmp_path):
    from pwbench import report

    runs = []
    for name in ("pairs_2t", "pairs_1t"):
        runs.append(Path(shutil.copytree(Path(__file__).parent / "fixtures" / "runs" / name,
                                         tmp_path / name)))
    meta = json.loads((runs[1] / "meta.json").read_text())
    (runs[1] / "meta.json").write_text(json.dumps(meta | {"emulated": True}))
    built = report.build(runs, tmp_path / "out")
    (warning,) = [w for w in built.warnings if "emulated" in w]
    assert "vm cpu 1t" in warning and "say nothing of real hardware" in warning
    page = built.index.read_text()
    assert page.index("timed on an emulated board") < page.index("Network latency per machine")
    ranked = pd.read_csv(tmp_path / "out" / "tables" / "selection_pairs_tiny.csv")
    assert "vm cpu 1t (emulated)" in set(ranked["machine"])


# ---- cross-compiled for aarch64 (no aarch64 needed) --------------------------------------------
def _layers():
    from test_tvm import LAYERS

    return LAYERS


@pytest.mark.cross
@pytest.mark.parametrize("core", ["arm", "neoverse-n1", "neoverse-v1"])
def test_every_layer_kind_cross_compiles_to_an_aarch64_library(core, tmp_path):
    if not HAVE_TVM or shutil.which(boards_mod.CROSS_COMPILER) is None:
        pytest.skip("needs apache-tvm and aarch64-linux-gnu-gcc")
    from pwbench.backends import tvm_backend
    from pwbench.backends.base import Options

    board = targets.resolve(core)
    backend = tvm_backend.Backend(board, Options(threads=2, work_dir=tmp_path))
    for name, spec in _layers().items():
        built = backend.build(spec)
        head = Path(built.artifact.library).read_bytes()[:20]
        assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == EM_AARCH64, name


# ---- on the emulated aarch64 board (qemu) ------------------------------------------------------
def _check_on_board(board, spec, tmp_path):
    from pwbench.backends import tvm_backend
    from pwbench.backends.base import Options
    from pwbench.measure import verify
    from pwbench.tvm_bridge import rpc

    built = tvm_backend.Backend(board, Options(threads=1, work_dir=tmp_path)).build(spec)

    def check():
        kernel = built.make()
        try:
            return verify.check(kernel, spec)
        finally:
            kernel.close()

    return rpc.bounded(check, 120, f"checking {spec.label} on the emulated board")


@pytest.mark.cross
@pytest.mark.parametrize("core, layouts", [("arm", ("NCHW", "NHWC")), ("neoverse-v1", ("NCHW",))])
def test_every_layer_kind_passes_the_exact_check_on_the_emulated_board(emulated, core, layouts,
                                                                       tmp_path):
    from pwbench.targets import local_fleet
    from pwbench.targets.board import Endpoint

    board = targets.resolve(core, Endpoint("127.0.0.1", emulated["port"], local_fleet.AARCH64_KEY))
    assert board.run_problem() is None and board.emulated
    verdicts = {}
    for name, spec in _layers().items():
        for layout in layouts:
            check = _check_on_board(board, spec.replace(layout=layout), tmp_path)
            verdicts[f"{name} {layout}"] = (check.verdict, check.detail)
    assert all(v == ("passed", "") for v in verdicts.values()), verdicts


@pytest.mark.cross
@pytest.mark.cli
def test_a_fleet_run_marks_emulated_rows_and_the_report_warns_before_ranking(emulated):
    from pwbench.targets import local_fleet

    suite = emulated["tmp"] / "tiny.toml"
    suite.write_text('[[layer]]\nname = "pw"\nin_channels = 8\nout_channels = 8\nsize = 6\n')
    out = emulated["tmp"] / "fleet-run"
    proc = run_pwbench("run", "--fleet", emulated["tracker"], "--suite", suite, "--threads", "1",
                       "--processes", "1", "--warmup-ms", "5", "--sample-ms", "30", "--output", out,
                       env=emulated["env"], timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for key, emulated_rows in ((local_fleet.X86_KEY, False), (local_fleet.AARCH64_KEY, True)):
        rows = pd.read_parquet(out / key / "records.parquet")
        assert set(rows["check"]) == {"passed"} and set(rows["emulated"]) == {emulated_rows}
        assert json.loads((out / key / "meta.json").read_text())["emulated"] is emulated_rows
    assert "timed on an emulated board" in proc.stdout
    page = (out / "report" / "index.html").read_text()
    assert page.index("timed on an emulated board") < page.index("Network latency per machine")


@pytest.mark.cross
@pytest.mark.cli
def test_structured_kernels_are_tuned_on_the_emulated_board_and_exact_in_both_layouts(emulated):
    """tvm-tuned on a NEON board: the structured space at 4 lanes, its candidates measured on
    the board by MetaSchedule's RPC runner, every kernel then verified there."""
    suite = emulated["tmp"] / "kinds.toml"
    suite.write_text("\n".join([
        '[suite]\nlayout = ["NCHW", "NHWC"]',
        '[[layer]]\nname = "pw"\nin_channels = 8\nout_channels = 12\nsize = 5',
        '[[layer]]\nname = "dw"\nin_channels = 8\ndepthwise = true\nsize = 7\nkernel_size = 3\n'
        'padding = 1\nstride = 2',
        '[[layer]]\nname = "full"\nin_channels = 4\nout_channels = 8\nsize = 6\nkernel_size = 3\n'
        'padding = 1']) + "\n")
    out = emulated["tmp"] / "tuned-on-board"
    proc = run_pwbench("run", "--target", "arm", "--rpc-tracker", emulated["tracker"], "--rpc-key",
                       "aarch64-qemu", "--suite", suite, "--backend", "tvm-tuned", "--trials", "2",
                       "--threads", "1", "--processes", "1", "--warmup-ms", "5", "--sample-ms", "20",
                       "--tuning-dir", emulated["tmp"] / "board-db", "--output", out,
                       env=emulated["env"], timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = pd.read_parquet(out / "records.parquet")
    assert set(rows["check"]) == {"passed"} and set(rows["space"]) == {"structured"}
    assert set(rows["tuning"]) == {"tuned"} and set(rows["clock"]) == {"time_evaluator"}
    assert {(r["layer"], r["layout"]) for _, r in rows.iterrows()} == {
        (layer, layout) for layer in ("pw", "dw", "full") for layout in ("NCHW", "NHWC")}
    assert all(json.loads(t)["mtriple"] == "aarch64-linux-gnu" for t in rows["target_string"])
