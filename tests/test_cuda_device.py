"""On a GPU (device; skipped with the reason where none is visible): every layer kind, with torch
(cuDNN) and TVM (DLight), passes verification in fp32, TF32 and fp16; a kernel bundle runs with a
runtime-only TVM; cold is not faster than hot; CUDA-event and host timings agree on a long
kernel; the GPU's peaks are measured."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import os
from pathlib import Path

import pytest

from pwbench.measure import runner, timing
from pwbench.targets import cuda

pytestmark = [pytest.mark.device, pytest.mark.skipif(
    not cuda.torch_sees_gpu(), reason="no CUDA GPU visible here (torch.cuda.is_available() is False)")]
HAVE_TVM = importlib.util.find_spec("tvm") is not None
needs_build = pytest.mark.skipif(not (HAVE_TVM and shutil.which("nvcc")), reason="needs TVM and nvcc")
FAST = timing.Budget(warmup_ms=5, sample_ms=30)
ROOT = Path(__file__).resolve().parents[1]


def kinds_suite(tmp_path) -> Path:
    from test_cuda_build import suite_text

    path = tmp_path / "kinds.toml"
    path.write_text(suite_text())
    return path


def run(tmp_path, name, **config):
    config = runner.RunConfig(target="cuda", threads=1, output=tmp_path / name, budget=FAST,
                              processes=1, **config)
    return runner.execute(runner.plan(config)).rows


@needs_build
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_every_layer_kind_passes_with_cudnn_and_dlight(tmp_path, dtype):
    rows = run(tmp_path, dtype, suite=str(kinds_suite(tmp_path)), backends=("torch", "tvm"),
               dtype=dtype)
    failed = [(r["layer"], r["backend"], r["variant"], r["check"], r["error"]) for r in rows
              if r["check"] != "passed"]
    assert not failed
    assert {r["backend"] for r in rows} == {"torch", "tvm"} and all(r["median_s"] > 0 for r in rows)
    for r in rows:
        assert r["clock"] == "cuda-events" and r.get("gpu_sm_clock_mhz_before")
        assert (r.get("cudnn_kernels") if r["backend"] == "torch" else r.get("dlight_rule"))
    if dtype == "float32":  # TF32 from compute capability 8.0
        assert any(r["variant"] == "tf32" for r in rows) == (cuda.gpu_facts()[
            "gpu_compute_capability"] >= "8.0")


@needs_build
def test_a_bundle_runs_with_a_runtime_only_tvm(tmp_path):
    from pwbench import cli

    kit = tmp_path / "bundle"
    assert cli.main(["build", "--suite", str(kinds_suite(tmp_path)), "--output", str(kit)]) == 0
    rt = tmp_path / "rt"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tvm_runtime.py"), "--out", str(rt),
                    "--python-version", PYTHON, "--from-installed", "--no-tar"], check=True, timeout=300)
    env = os.environ | {"PYTHONPATH": str(rt / "site")}
    done = subprocess.run([sys.executable, "-m", "pwbench", "run", "--target", "cuda", "--kernels",
                           str(kit), "--processes", "1", "--warmup-ms", "5", "--sample-ms", "30",
                           "--output", str(tmp_path / "run")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    import pandas as pd

    rows = pd.read_parquet(tmp_path / "run" / "records.parquet")
    assert set(rows["check"]) == {"passed"} and {"torch", "tvm"} <= set(rows["backend"])
    assert rows[rows["backend"] == "tvm"]["kernel_bundle"].notna().all()


def test_cold_is_not_faster_than_hot(tmp_path):
    suite = tmp_path / "s.toml"  # operands of 2.4 MB: at home in L2 when hot
    suite.write_text("[[layer]]\nname = \"dw\"\nin_channels = 96\ndepthwise = true\nsize = 56\n"
                     "kernel_size = 3\npadding = 1\n")
    budget = timing.Budget(warmup_ms=20, sample_ms=200)
    hot = run(tmp_path, "hot", suite=str(suite), backends=("torch",), budget=budget)
    cold = run(tmp_path, "cold", suite=str(suite), backends=("torch",), budget=budget, cache="cold")
    assert hot[0]["check"] == cold[0]["check"] == "passed"
    assert cold[0]["median_s"] >= 0.98 * hot[0]["median_s"], (cold[0]["median_s"], hot[0]["median_s"])


def test_cuda_events_and_host_timing_agree_on_a_long_kernel():
    import statistics

    import torch

    from pwbench.backends import torch_backend
    from pwbench.measure.clocks import HostClock
    from pwbench.workloads.spec import ConvSpec

    kernel = torch_backend.TorchConv(ConvSpec(32, 256, 256, 56, 56, 3, padding=1), "cuda", 1)
    host = HostClock(kernel, torch.cuda.synchronize)
    events = [kernel.clock.time(3) for _ in range(7)]
    hosts = [host.time(3) for _ in range(7)]
    e, h = statistics.median(events), statistics.median(hosts)
    assert e > 3 * 5e-3, "not a long kernel"  # 231 GFLOP x 3: several ms on any GPU
    assert abs(h / e - 1) < 0.05, (e, h)


def test_gpu_peaks_are_measured():
    measured = cuda.CudaGPU().measure_peaks(1)
    assert measured.flops_per_s > 1e12 and measured.bytes_per_s > 1e11
    assert any(m.startswith("FMA kernel") for m in measured.flops_candidates), measured.notes
    assert measured.flops_by_dtype.get("float16", 0) > measured.flops_per_s  # tensor cores
