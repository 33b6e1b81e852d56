"""Boards behind a TVM RPC tracker, for real: a tracker and two stock TVM servers (x86, this
machine, 127.0.0.1 only) started once for this module. A tiny suite runs on a board (verified
and timed there); a tiny tuning measures its candidates on both servers; a board killed mid-run
gives error rows and a clean exit; a dead tracker, a key with no board and a board of the wrong
architecture are one line before anything is measured. Every process is stopped at the end
(and every one runs under `timeout`, in case this process is killed first)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import PWBENCH, run_pwbench

HAVE_TVM = importlib.util.find_spec("tvm") is not None
pytestmark = [pytest.mark.cpu, pytest.mark.tvm,
              pytest.mark.skipif(not HAVE_TVM, reason="apache-tvm is not installed")]
TINY = """[suite]
description = "tiny rpc suite"
batch = 1

[[layer]]
name = "tiny.pw"
in_channels = 8
out_channels = 16
size = 6

[[layer]]
name = "tiny.dw"
in_channels = 8
depthwise = true
size = 7
kernel_size = 3
padding = 1
"""
FAST = ["--threads", "1", "--processes", "1", "--warmup-ms", "5", "--sample-ms", "30"]


RUNTIME_ONLY = {"TVM_USE_RUNTIME_LIB": "1"}  # a board that only runs kernels: starts faster


def _fleet(tmp: Path, name: str, servers: dict, stock: bool = True, runtime_only=()):
    from pwbench.targets import local_fleet

    fleet = local_fleet.new(tmp / f"{name}.json", lifetime_s=900, log_dir=tmp / f"{name}-logs")
    fleet.start_tracker(local_fleet.free_port())
    for key, count in servers.items():
        for _ in range(count):
            fleet.start_server(key, stock=stock, env_extra=RUNTIME_ONLY if key in runtime_only else None)
    return fleet


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    """One tracker with two x86 servers under key `x86`; a second tracker with one board server
    (key `victim`) for the test that kills it. Both start at once, registration is waited for."""
    tmp = tmp_path_factory.mktemp("rpc")
    fleets = []
    try:
        fleets.append(_fleet(tmp, "main", {"x86": 2, "frozen": 1}, runtime_only={"frozen"}))
        fleets.append(_fleet(tmp, "victim", {"victim": 1}, stock=False, runtime_only={"victim"}))
        fleets[0].wait({"x86": 2, "frozen": 1})
        fleets[1].wait({"victim": 1})
        (tmp / "tiny.toml").write_text(TINY)
        env = dict(os.environ, PWBENCH_CACHE_DIR=str(tmp / "cache"))
        yield {"main": fleets[0], "victim": fleets[1], "tmp": tmp, "env": env,
               "suite": str(tmp / "tiny.toml")}
    finally:
        for fleet in fleets:
            fleet.stop()
        assert not any(p.alive() for f in fleets for p in f.processes)


def _rpc(fleet, key):
    return ["--rpc-tracker", fleet.tracker, "--rpc-key", key]


def _one_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("pwbench: error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


@pytest.mark.cli
def test_a_tiny_suite_is_verified_and_timed_on_a_board(boards):
    out = boards["tmp"] / "run1"
    proc = run_pwbench("run", "--suite", boards["suite"], "--target", "cpu", "--backend", "tvm",
                       *_rpc(boards["main"], "x86"), *FAST, "--output", out, env=boards["env"],
                       timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = pd.read_parquet(out / "records.parquet")
    assert set(rows["check"]) == {"passed"} and len(rows) == 2
    assert set(rows["clock"]) == {"time_evaluator"} and set(rows["target"]) == {"cpu@x86"}
    assert (rows["median_s"] > 0).all() and not rows["emulated"].any()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rpc_key"] == "x86" and meta["rpc_tracker"] == boards["main"].tracker
    assert meta["board"]["server"].startswith("stock TVM")  # facts asked from the board
    assert "on the board" in meta["peaks"]["flops_method"]  # peaks measured there, with TVM kernels
    assert "on the board" in meta["peaks"]["bytes_method"]
    assert json.loads(rows["target_string"].iloc[0])["num-cores"] == 1


def _served(fleet, key) -> list[int]:
    """Libraries each server of `key` has loaded so far (stock servers log every load_module)."""
    return [Path(p.log).read_text().count("load_module") for p in fleet.processes if p.key == key]


def test_a_tiny_tuning_measures_candidates_on_both_boards(boards, tmp_path):
    """The one tuner with the board's toolchain: structured candidates built here, measured by
    MetaSchedule's RPC runner on every board of the key."""
    from pwbench import targets
    from pwbench.targets.board import Endpoint
    from pwbench.tvm_bridge import layers, tuner
    from pwbench.workloads.spec import ConvSpec

    fleet = boards["main"]
    board = targets.resolve("cpu", Endpoint("127.0.0.1", fleet.tracker_port, "x86"))
    chain = board.toolchain(1)
    before = _served(fleet, "x86")
    measured = []
    spec = ConvSpec(1, 8, 8, 8, 8, 3, 1, 1, groups=8)
    job = layers.job(spec, layers.plan(spec, chain, "structured"))
    session = tuner.Tuner(chain, tmp_path / "db", 1)
    try:
        session.tune(job.tasks, 4, lambda task, seconds, spent: measured.extend(seconds) or True)
    finally:
        session.close()
    after = _served(fleet, "x86")
    assert len(measured) == 4 and all(s is not None and s > 0 for s in measured), measured
    assert all(b > a for a, b in zip(before, after)), (before, after)  # both boards measured
    from pwbench.tvm_bridge import metaschedule

    found = tuner.best(metaschedule.open_database(tmp_path / "db"),
                       [layers._module(t.func()) for t in layers.plan(spec, chain, "structured").tasks])
    assert found is not None


def test_tuned_backend_and_tune_command_hand_the_board_to_the_tuner(boards, monkeypatch, capsys,
                                                                     tmp_path):
    from pwbench import cli, targets
    from pwbench.backends import tvm_tuned_backend
    from pwbench.backends.base import Options
    from pwbench.backends.tuning_options import TuningOptions
    from pwbench.targets.board import Endpoint
    from pwbench.tvm_bridge import tuning
    from pwbench.workloads.spec import ConvSpec

    seen = []

    def fake(self, jobs, budget, on_progress=None):
        seen.append(self.toolchain)
        raise RuntimeError("not tuned in this test")

    monkeypatch.setattr(tuning.Session, "tune", fake)
    monkeypatch.setenv("PWBENCH_CACHE_DIR", str(boards["tmp"] / "cache"))
    status = cli.main(["tune", "--suite", boards["suite"], "--target", "cpu", "--threads", "1",
                       "--tuning-dir", str(boards["tmp"] / "db-cli"), *_rpc(boards["main"], "x86")])
    out, err = capsys.readouterr()  # the fake's error reached the command line as a bug: exit 70
    assert status == cli.EXIT_INTERNAL and "RuntimeError: not tuned in this test" in err
    assert "candidates measured on board key 'x86'" in out
    board = targets.resolve("cpu", Endpoint("127.0.0.1", boards["main"].tracker_port, "x86"))
    tuning_options = TuningOptions(tuning_dir=tmp_path / "db", tuning_mode="layer")
    backend = tvm_tuned_backend.Backend(board, Options(threads=1, work_dir=tmp_path, extra={
        TuningOptions.group: tuning_options}))
    with pytest.raises(RuntimeError, match="not tuned"):
        backend.build(ConvSpec(1, 8, 8, 6, 6))
    assert [(type(t).__name__, t.endpoint.key) for t in seen] == [("Board", "x86")] * 2


@pytest.mark.cli
def test_a_board_killed_mid_run_is_an_error_row_and_a_clean_exit(boards):
    fleet, out = boards["victim"], boards["tmp"] / "killed"
    suite = boards["tmp"] / "three.toml"
    suite.write_text(TINY + '\n[[layer]]\nname = "tiny.full"\nin_channels = 4\nout_channels = 8\n'
                            'size = 7\nkernel_size = 3\npadding = 1\n')
    argv = [PWBENCH, "run", "--suite", str(suite), "--target", "cpu", "--backend", "tvm",
            *_rpc(fleet, "victim"), "--threads", "1", "--processes", "1", "--warmup-ms", "5",
            "--sample-ms", "2500", "--output", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=boards["env"])
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:  # the first kernel is measured
            records = out / "records.jsonl"
            if records.exists() and records.read_text().count("\n") >= 1:
                break
            time.sleep(0.2)
        time.sleep(0.5)  # the second kernel is on the board now
        start = time.monotonic()
        (victim,) = [p for p in fleet.processes if p.key == "victim"]
        fleet.kill(victim)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stdout + stderr
    assert time.monotonic() - start < 120  # not the worker's kernel timeout: the board's death
    rows = pd.read_parquet(out / "records.parquet")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete" and len(rows) == 3
    assert (rows["check"] == "passed").sum() >= 1
    errors = rows[rows["error"] != ""]["error"]
    assert len(errors) >= 1 and all("board" in e for e in errors), list(errors)


@pytest.mark.cli
def test_a_dead_tracker_is_one_line_at_once(boards):
    from pwbench.targets import local_fleet

    start = time.monotonic()
    line = _one_line(run_pwbench("run", "--suite", boards["suite"], "--target", "cpu", "--backend",
                                 "tvm", "--rpc-tracker", f"127.0.0.1:{local_fleet.free_port()}",
                                 "--rpc-key", "x86", env=boards["env"]))
    assert "unreachable" in line and time.monotonic() - start < 60  # TVM's own client: 60 s of retries


def _main_one_line(capsys, *argv) -> str:
    """cli.main in this process (TVM already imported: seconds saved per call), one line."""
    from pwbench import cli

    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pwbench: error: "), err
    return err[0]


def test_a_key_without_boards_and_a_wrong_architecture_are_one_line(boards, capsys, monkeypatch):
    monkeypatch.setenv("PWBENCH_CACHE_DIR", str(boards["tmp"] / "cache"))
    run = ("run", "--suite", boards["suite"], "--backend", "tvm", "--output", boards["tmp"] / "no")
    line = _main_one_line(capsys, *run, "--target", "cpu", *_rpc(boards["main"], "no-such-key"))
    assert "no board is registered under key 'no-such-key'" in line and "x86" in line
    line = _main_one_line(capsys, *run, "--target", "neoverse-n1", *_rpc(boards["main"], "x86"))
    assert "are x86_64, not aarch64" in line
    assert not (boards["tmp"] / "no").exists()  # nothing measured, nothing written


def test_fleet_lists_keys_with_free_and_busy_boards(boards, capsys):
    from pwbench import cli

    deadline = time.monotonic() + 20  # a board re-registers as free a moment after a session
    while True:
        assert cli.main(["fleet", "--rpc-tracker", boards["main"].tracker]) == 0
        (row,) = [line for line in capsys.readouterr().out.splitlines() if " x86 " in line]
        cells = [c.strip() for c in row.split("│")[1:5]]  # key, boards, free, busy
        if cells == ["x86", "2", "2", "0"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert cells == ["x86", "2", "2", "0"]


def test_a_session_shorter_than_a_kernel_is_an_error_row(boards, tmp_path):
    """The board ends the session at --rpc-session-timeout; the kernel's row says so. One remote
    call is held longer than the session on purpose: the timer grows its block of calls until a
    block lasts 30 s (min_block_s), so the 3 s session always ends inside a remote call, after
    the upload and the checks (a fraction of a second) and whatever the machine's load."""
    from pwbench.targets.board import Endpoint
    from pwbench.measure import timing
    from pwbench.pipeline import runner

    config = runner.RunConfig(suite=boards["suite"], target="cpu", backends=("tvm",), threads=1,
                              output=tmp_path / "short", processes=1, filter="layer == 'tiny.pw'",
                              budget=timing.Budget(warmup_ms=5, sample_ms=100, min_block_s=30.0),
                              rpc=Endpoint("127.0.0.1", boards["main"].tracker_port, "x86", 3.0),
                              peaks_file=_peaks(tmp_path))
    (row,) = runner.execute(runner.plan(config)).rows
    assert row["check"] == "passed" and "limit (--rpc-session-timeout)" in row["error"], row["error"]


def _peaks(tmp: Path) -> Path:
    path = tmp / "peaks.toml"
    path.write_text("flops_per_s = 1e11\nbytes_per_s = 1e10\n")
    return path


def test_every_remote_wait_is_bounded(boards):
    """A board that never answers (a frozen process, its socket open) costs a deadline, not
    forever: TVM's RPC calls have no timeout of their own."""
    from pwbench.tvm_bridge import rpc

    start = time.monotonic()
    with pytest.raises(rpc.BoardError, match="no answer within 1 s"):
        rpc.bounded(lambda: time.sleep(30), 1.0, "a frozen board")
    assert time.monotonic() - start < 5
    (frozen,) = [p for p in boards["main"].processes if p.key == "frozen"]
    os.killpg(frozen.pid, signal.SIGSTOP)  # registered and "free", but never answers
    try:
        from pwbench.targets.board import Endpoint

        start = time.monotonic()
        endpoint = Endpoint("127.0.0.1", boards["main"].tracker_port, "frozen", 3, wait_s=2)
        with pytest.raises(rpc.BoardError, match="no answer within"):
            rpc.board_facts(endpoint)
        assert time.monotonic() - start < 2 + 3 + 10
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)


class _Session:
    """A session stand-in that records uploads and fails as told."""

    def __init__(self, upload_error=None, load_error=None):
        self.names, self.upload_error, self.load_error = [], upload_error, load_error

    def upload(self, path, name):
        if self.upload_error:
            raise self.upload_error
        self.names.append(name)

    def load_module(self, name):
        if self.load_error:
            raise self.load_error
        return name


def test_uploads_get_unique_names_and_refusals_are_one_line(tmp_path):
    """A re-uploaded name makes the board's dlopen return the old handle and its session
    segfault: no two uploads may share a name, even of the same file."""
    from pwbench.tvm_bridge import rpc

    library = tmp_path / "k.so"
    library.write_bytes(b"\x7fELF kernel")
    session = _Session()
    rpc.upload(session, str(library), "k")
    rpc.upload(session, str(library), "k")
    assert len(set(session.names)) == 2 and all(n.endswith(".so") for n in session.names)
    with pytest.raises(rpc.BoardError, match="refused the upload of k.so: .*No space left"):
        rpc.upload(_Session(upload_error=OSError("No space left on device")), str(library), "k")
    wrong = RuntimeError("Traceback ...\nRPCError: Failed to load dynamic shared library x.so: "
                         "wrong ELF class")
    with pytest.raises(rpc.BoardError, match="cannot load the uploaded library"):
        rpc.upload(_Session(load_error=wrong), str(library), "k")
