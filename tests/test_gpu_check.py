"""The prepared first run on a GPU (scripts/gpu_check.py) and the runtime it carries
(scripts/make_tvm_runtime.py): refusals are one line and exit 2 (no GPU, no prepared folder, a
runtime for another Python); `run` puts every step's log and status into one tarball, each step
under its limit and all under one deadline. `prepare` end to end (builds, downloads the cp312
wheels: minutes) is a `bench` test."""

from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pwbench.targets import cuda

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
NO_GPU = pytest.mark.skipif(cuda.torch_sees_gpu(), reason="a GPU is visible here")


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    return done.stderr.strip()


@pytest.mark.cli
@NO_GPU
def test_run_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"python": "3.12", "runtime_site": "rt/site"}))
    done = subprocess.run([sys.executable, str(SCRIPT), "run", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert "no CUDA GPU is visible here" in one_line(done)
    assert not (tmp_path / "results.tgz").exists()


@pytest.mark.cli
def test_run_of_a_folder_that_was_not_prepared_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "run", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert "is not a prepared folder" in one_line(done)


@pytest.mark.unit
def test_run_puts_every_step_into_one_tarball(tmp_path, monkeypatch):
    check = script("gpu_check")
    py = sys.executable
    monkeypatch.setattr(check, "ready", lambda folder: {"runtime_site": "rt/site", "python": "3.12"})
    monkeypatch.setattr(check, "plan_steps", lambda folder, work: [
        ("passes", [py, "-c", "print('fine')"], 30.0),
        ("fails", [py, "-c", "raise SystemExit(3)"], 30.0),
        ("hangs", [py, "-c", "import time; time.sleep(30)"], 1.0),
        ("made late", lambda: [py, "-c", "print('late')"], 30.0)])
    assert check.run(tmp_path, tmp_path / "out.tgz") == 1  # a step failed
    with tarfile.open(tmp_path / "out.tgz") as archive:
        names = archive.getnames()
        summary = json.load(archive.extractfile("results/summary.json"))
        log = archive.extractfile("results/logs/passes.log").read().decode()
    assert [s["status"] for s in summary["steps"]] == ["ok", "exit 3", "timeout", "ok"]
    assert log.strip() == "fine" and "results/logs/made_late.log" in names


@pytest.mark.unit
def test_steps_past_the_deadline_are_skipped_not_started(tmp_path, monkeypatch):
    check = script("gpu_check")
    monkeypatch.setattr(check, "ready", lambda folder: {"runtime_site": "rt/site", "python": "3.12"})
    monkeypatch.setattr(check, "DEADLINE_S", 10.0)  # under the 20 s a step needs to be started
    monkeypatch.setattr(check, "plan_steps", lambda folder, work: [("any", ["false"], 5.0)])
    assert check.run(tmp_path, None) == 1
    with tarfile.open(tmp_path / "results.tgz") as archive:
        summary = json.load(archive.extractfile("results/summary.json"))
    assert summary["steps"] == [{"name": "any", "status": "skipped", "seconds": 0.0,
                                 "why": "out of time"}]


@pytest.mark.unit
def test_the_runtime_refuses_another_pythons_extension_and_downloads_inside_it(tmp_path):
    runtime = script("make_tvm_runtime")
    here = ".".join(platform.python_version_tuple()[:2])
    other = "3.12" if here != "3.12" else "3.11"
    with pytest.raises(SystemExit, match=f"built for Python {here}, not {other}"):
        runtime.build(tmp_path / "rt", other, from_installed=True)
    with pytest.raises(SystemExit, match="inside --out"):
        runtime.build(tmp_path / "rt", other, wheels=tmp_path / "rt" / "wheels")
    site = tmp_path / "site" / "tvm_ffi"
    site.mkdir(parents=True)
    (site / "core.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    found = runtime.problems(tmp_path / "site", "3.12")
    assert any("extension for CPython 3.12" in p for p in found)
    assert any("for another Python: core.cpython-311" in p for p in found)


@pytest.mark.cli
def test_make_tvm_runtime_refusal_is_one_line(tmp_path):
    here = ".".join(platform.python_version_tuple()[:2])
    other = "3.12" if here != "3.12" else "3.11"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tvm_runtime.py"), "--out",
                           str(tmp_path / "rt"), "--python-version", other, "--from-installed"],
                          capture_output=True, text=True, timeout=120)
    assert "--from-installed copies this interpreter's tvm_ffi" in one_line(done)


@pytest.mark.bench
@pytest.mark.skipif(not (importlib.util.find_spec("tvm") and shutil.which("nvcc")),
                    reason="needs apache-tvm and nvcc")
def test_prepare_makes_a_folder_the_gpu_machine_can_run(tmp_path):
    """Minutes: four bundles built, the cp312 wheels downloaded (once, into the pwbench cache)."""
    out = tmp_path / "check"
    subprocess.run([sys.executable, str(SCRIPT), "prepare", "--out", str(out)], check=True,
                   timeout=1200, capture_output=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["size_mib"] < 60 and manifest["python"] == "3.12" and manifest["arch"] == "sm_90"
    assert manifest["tvm_ffi"] and all(b["arch"] == "sm_90" and not b["errors"]
                                       for b in manifest["bundles"].values())
    assert not script("make_tvm_runtime").problems(out / "rt" / "site", "3.12")
    assert not list(out.rglob("*.whl"))  # downloads stay in the cache
    extra = json.loads((out / "bundles" / "extra" / "manifest.json").read_text())
    assert [k["columns"]["tensor_cores"] for k in extra["kernels"]] == [True, False]
    for name in ("probe.py", "gpu_check.py", "tests/test_cuda_device.py", "tests/conftest.py"):
        assert (out / name).is_file()
