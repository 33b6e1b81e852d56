"""The installed `pwbench` console script, run as a user would."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.cli

PWBENCH = shutil.which("pwbench", path=str(Path(sys.executable).parent)) or shutil.which("pwbench")
TINY = """
[suite]
description = "two tiny layers"
[[layer]]
name = "pw"
in_channels = 8
out_channels = 16
size = 8
[[layer]]
name = "dw"
in_channels = 8
depthwise = true
size = 8
kernel_size = 3
padding = 1
"""
FAST = ["--warmup-ms", "1", "--sample-ms", "5"]


def pwbench(*args, cwd=None, timeout=120):
    assert PWBENCH, "the pwbench console script is not installed"
    return subprocess.run([PWBENCH, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


@pytest.fixture
def tiny_suite(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_run_writes_a_complete_run_directory(tiny_suite, tmp_path):
    out = tmp_path / "run"
    proc = pwbench("run", "--suite", tiny_suite, "--output", out, "--threads", 1, "--batch", 2, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "pwbench results" in proc.stdout and "passed" in proc.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["threads"] == 1 and meta["suite"] == "tiny"
    assert meta["versions"]["torch"].startswith("2.13")
    frame = pd.read_parquet(out / "records.parquet")
    assert list(frame["layer"]) == ["pw", "dw"]
    assert list(frame["kind"]) == ["pointwise", "depthwise"]
    assert set(frame["batch"]) == {2} and set(frame["check"]) == {"passed"}
    assert (frame["median_s"] > 0).all() and (frame["n_samples"] >= 7 * 3).all()
    assert (frame["n_processes"] == 3).all() and meta["processes"] == 3  # the default
    assert (out / "records.csv").is_file()


def test_default_output_goes_under_results(tiny_suite, tmp_path):
    proc = pwbench("run", "--suite", tiny_suite, *FAST, "--processes", 1, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run,) = (tmp_path / "results").iterdir()
    assert run.name.endswith("_tiny_cpu") and (run / "records.parquet").is_file()


BAD_INPUT = {
    "unknown suite": (["run", "--suite", "nosuch"], "unknown suite 'nosuch'"),
    "unknown backend": (["run", "--backend", "torch,nosuch"], "unknown backend 'nosuch'"),
    "unknown target": (["run", "--target", "tpu"], "unknown target 'tpu'"),
    "missing gpu": (["run", "--target", "cuda"], "no CUDA GPU"),  # skipped where one is
    "no processes": (["run", "--processes", "0"], "--processes must be at least 1"),
    "lukewarm cache": (["run", "--cache", "lukewarm"], "--cache must be one of hot, cold"),
    "bad filter": (["run", "--filter", "kind =="], "bad --filter"),
    "empty filter": (["run", "--filter", "groups > 10000"], "selects none"),
    "bad batch": (["run", "--batch", "0"], "positive integer"),
    "bad list": (["list", "nothing"], "invalid choice"),
    "no command": ([], "required"),
}


@pytest.mark.parametrize("args, message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_clear_line_and_exit_2(args, message, tmp_path):
    if "cuda" in args and shutil.which("nvidia-smi"):
        pytest.skip("a GPU is visible here: --target cuda is not bad input")
    proc = pwbench(*args, "--output", tmp_path / "r") if args and args[0] == "run" else pwbench(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # nothing measured, nothing written


@pytest.mark.parametrize("body, message", [
    ("[[layer]\nin_channels = 4", "malformed TOML"),
    ("[[layer]]\nin_channels = 4\nout_channels = 4\nsize = 8\n\n[[layer]]\nin_channels = 6\n"
     "out_channels = 4\ngroups = 4\nsize = 8\n", ":6 ([[layer]] #2): groups=4 must divide"),
    ("[[layer]]\nin_channels = 4\nout_channels = 4\nsize = 2\nkernel_size = 5\n", ":1 ([[layer]] #1): empty output"),
])
def test_malformed_suite_files_name_file_and_line(body, message, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    proc = pwbench("run", "--suite", path)
    assert proc.returncode == 2 and str(path) in proc.stderr and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_unwritable_output(tiny_suite, tmp_path):
    (tmp_path / "file").write_text("")
    proc = pwbench("run", "--suite", tiny_suite, "--output", tmp_path / "file" / "run", *FAST)
    assert proc.returncode == 2 and "cannot write results" in proc.stderr


def test_list_and_env():
    suites = pwbench("list", "suites")
    assert suites.returncode == 0
    for name in ("default", "resnet50", "mobilenetv2", "efficientnet_b0", "inception_v3"):
        assert name in suites.stdout
    backends = pwbench("list", "backends")
    assert backends.returncode == 0
    assert re.search(r"^│ torch\s+│ torch\s+│ ready", backends.stdout, re.M), backends.stdout
    listed = pwbench("list", "targets")
    assert re.search(r"^│ cpu\s+│ available", listed.stdout, re.M), listed.stdout
    cuda = "available" if shutil.which("nvidia-smi") else "build only" if shutil.which("nvcc") else "unavailable"
    assert re.search(rf"^│ cuda\s+│ {cuda}", listed.stdout, re.M), listed.stdout
    env = json.loads(pwbench("env").stdout)
    assert env["cores"] >= 1 and env["python"].count(".") == 2 and env["cpu_model"]
    assert env["hardware"].startswith(env["cpu_model"])


def test_ctrl_c_keeps_every_finished_row(tmp_path):
    suite = tmp_path / "long.toml"
    suite.write_text("[[sweep]]\nname = 'l{size}'\nin_channels = 8\nout_channels = 8\n"
                     "size = [8, 9, 10, 11, 12, 13, 14, 15]\n")
    out = tmp_path / "run"
    # Ctrl-C as in a terminal: a shell that runs the tests in the background (`cmd &` without job
    # control) hands its children SIGINT ignored, and Python then keeps ignoring it
    proc = subprocess.Popen([PWBENCH, "run", "--suite", suite, "--output", out, "--sample-ms", "400"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    records = out / "records.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (records.exists() and records.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    meta = json.loads((out / "meta.json").read_text())
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert meta["status"] == "interrupted" and 2 <= len(rows) < 8 and meta["rows"] == len(rows)
    assert len(pd.read_parquet(out / "records.parquet")) == len(rows)
