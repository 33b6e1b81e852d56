"""On a GPU (device; skipped with the reason where none is visible): every layer kind, with torch
(cuDNN) and TVM (DLight), passes verification in fp32, TF32 and fp16; a kernel bundle runs with a
runtime-only TVM; cold is not faster than hot; CUDA-event and host timings agree on a long
kernel; CUDA-graph replay of a tiny kernel is not launch-bound; the GPU's peaks are measured.

The tests that build kernels need TVM's compiler library, not only an importable `tvm`: on a GPU
machine with the runtime alone (scripts/make_tvm_runtime.py, scripts/gpu_check.py) they are
skipped with that reason."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import os
from pathlib import Path

import pytest

from pwbench.measure import timing
from pwbench.pipeline import runner
from pwbench.targets import cuda

pytestmark = [pytest.mark.device, pytest.mark.skipif(
    not cuda.torch_sees_gpu(), reason="no CUDA GPU visible here (torch.cuda.is_available() is False)")]
def tvm_compiler_loads() -> bool:
    """Whether TVM's compiler library (libtvm_compiler.so) loads: a runtime-only TVM imports
    as `tvm` all the same, and then falls back to its runtime alone."""
    if importlib.util.find_spec("tvm") is None:
        return False
    env = {k: v for k, v in os.environ.items() if k != "TVM_USE_RUNTIME_LIB"}
    probe = "import sys, tvm.base as b; sys.exit(0 if 'tvm_compiler' in b._LOADED_LIBS else 1)"
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          timeout=300).returncode == 0


# asked only where a GPU is (the whole module is skipped elsewhere): loading TVM takes seconds
needs_build = pytest.mark.skipif(
    cuda.torch_sees_gpu() and not (shutil.which("nvcc") and tvm_compiler_loads()),
    reason="needs nvcc and TVM's compiler library (libtvm_compiler.so)")
FAST = timing.Budget(warmup_ms=5, sample_ms=30)
ROOT = Path(__file__).resolve().parents[1]
PYTHON = "%d.%d" % sys.version_info[:2]


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
    if dtype == "float32":  # TF32 from compute capability 8.0 (as numbers: "10.0" < "8.0")
        assert any(r["variant"] == "tf32" for r in rows) == (
            cuda.capability(cuda.CudaGPU().compute_capability()) >= (8, 0))


@needs_build
def test_a_bundle_runs_with_a_runtime_only_tvm(tmp_path):
    from pwbench import cli

    kit = tmp_path / "bundle"
    assert cli.main(["build", "--suite", str(kinds_suite(tmp_path)), "--output", str(kit)]) == 0
    rt = tmp_path / "rt"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tvm_runtime.py"), "--out", str(rt),
                    "--python-version", PYTHON, "--from-installed", "--no-tar"], check=True,
                   timeout=300)
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
    """A block of calls long enough that the host's start and end cost nothing beside it
    (at least 50 ms: the number of calls is grown until then, since a GPU's speed decides how
    long one call is: this conv is 118 GFLOP, 2-3 ms on an H100 with TF32 off)."""
    import statistics

    import torch

    from pwbench.backends import torch_backend
    from pwbench.measure.clocks import HostClock
    from pwbench.workloads.spec import ConvSpec

    spec = ConvSpec(32, 256, 256, 56, 56, 3, padding=1)
    assert spec.flops == pytest.approx(118.4e9, rel=1e-3)
    kernel = torch_backend.TorchConv(spec, "cuda", 1)
    host = HostClock(kernel, torch.cuda.synchronize)
    number = 1
    while kernel.clock.time(number) < 50e-3:
        number *= 2
    events = [kernel.clock.time(number) for _ in range(7)]
    hosts = [host.time(number) for _ in range(7)]
    e, h = statistics.median(events), statistics.median(hosts)
    assert abs(h / e - 1) < 0.05, (number, e, h)


def test_graph_replay_of_a_tiny_kernel_is_not_launch_bound():
    """A 1x1 conv of a few thousand MACs runs for a few microseconds, less than torch's
    dispatch: eager blocks are flagged launch-bound, CUDA-graph replay is not and is faster."""
    from pwbench.backends import torch_backend
    from pwbench.measure import clocks
    from pwbench.workloads.spec import ConvSpec

    kernel = torch_backend.TorchConv(ConvSpec(1, 16, 16, 8, 8, 1), "cuda", 1)
    eager = timing.measure(kernel.clock, FAST)
    graph = timing.measure(clocks.graphed(kernel), FAST)
    assert eager.columns()["launch_bound"], eager.columns()
    assert not graph.columns()["launch_bound"] and graph.median_s < eager.median_s


def test_gpu_peaks_are_measured():
    measured = cuda.CudaGPU().measure_peaks(1)
    assert measured.flops_per_s > 1e12 and measured.bytes_per_s > 1e11
    assert any(m.startswith("FMA kernel") for m in measured.flops_candidates), measured.notes
    assert measured.flops_by_dtype.get("float16", 0) > measured.flops_per_s  # tensor cores
