"""CUDA kernels built without a GPU (cross): every layer kind, NCHW and NHWC, builds for sm_80 and
sm_90 through `pwbench build`; the bundle's manifest round-trips and its resource table has a row
per kernel; bundles for another arch, GPU, CUDA or TVM version are refused in one line; a
runtime-only TVM loads the bundle's libraries; schedules from a tuning database build; without a
GPU, `pwbench run --target cuda` is one line and exit 2.

The kernels are built once per session (about 24 nvcc calls, a minute on 2 cores)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pwbench import cli
from pwbench.errors import UserError
from pwbench.store import bundle
from pwbench import toolkits
from pwbench.targets import cuda

HAVE_TVM = importlib.util.find_spec("tvm") is not None
HAVE_NVCC = shutil.which("nvcc") is not None
pytestmark = [pytest.mark.cross, pytest.mark.tvm,
              pytest.mark.skipif(not (HAVE_TVM and HAVE_NVCC), reason="needs apache-tvm and nvcc")]
ROOT = Path(__file__).resolve().parents[1]
PYTHON = "%d.%d" % sys.version_info[:2]  # a runtime copied from this interpreter is for its version

KINDS = {  # name: (suite fields, the DLight rule that schedules it in TVM 0.27)
    "pointwise": ("in_channels = 16\nout_channels = 32\nsize = 8", "Matmul"),
    "depthwise": ("in_channels = 16\ndepthwise = true\nsize = 8\nkernel_size = 3\npadding = 1",
                  "Fallback"),
    "grouped": ("in_channels = 16\nout_channels = 32\ngroups = 4\nsize = 8\nkernel_size = 3\n"
                "padding = 1", "Fallback"),
    "full": ("in_channels = 8\nout_channels = 16\nsize = 8\nkernel_size = 3\npadding = 1", "Matmul"),
    "strided": ("in_channels = 8\nout_channels = 16\nsize = 9\nkernel_size = 3\nstride = 2\n"
                "padding = 1", "Matmul"),
    "dilated": ("in_channels = 8\nout_channels = 16\nsize = 9\nkernel_size = 3\npadding = 2\n"
                "dilation = 2", "Matmul"),
}
ARCHS = ("sm_80", "sm_90")


def suite_text(kinds=KINDS, layouts=("NCHW", "NHWC")) -> str:
    text = '[suite]\ndescription = "every layer kind"\nbatch = 1\n'
    for layout in layouts:
        for name in kinds:
            text += f'\n[[layer]]\nname = "{name}.{layout}"\nlayout = "{layout}"\n{KINDS[name][0]}\n'
    return text


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    """arch -> bundle directory, every layer kind in both layouts, built in this process."""
    root = tmp_path_factory.mktemp("cuda")
    (root / "kinds.toml").write_text(suite_text())
    built = {}
    for arch in ARCHS:
        assert cli.main(["build", "--suite", str(root / "kinds.toml"), "--arch", arch,
                         "--output", str(root / arch)]) == 0
        built[arch] = root / arch
    return built


@pytest.mark.parametrize("arch", ARCHS)
def test_every_layer_kind_builds_for_the_arch(bundles, arch):
    kit = bundle.read(bundles[arch])
    assert kit.built_for["arch"] == arch and kit.meta["tvm"] and kit.built_for["cuda_toolkit"]
    assert len(kit.kernels) == 2 * len(KINDS) and not [k.error for k in kit.kernels if k.error]
    names = {s.id: s.name for s in kit.layers}
    for k in kit.kernels:
        kind = names[k.spec_id].split(".")[0]
        library = bundle.library_path(kit.dir, k)
        assert library.is_file() and library.parent.name == arch
        assert k.device == "cuda" and k.clock == "cuda-events" and k.backend == "tvm"
        assert k.columns["dlight_rule"] == KINDS[kind][1], (kind, k.columns)
        assert k.columns["cuda_arch"] == arch and k.columns["registers"] > 0
        first = k.device_kernels[0]
        assert 0 < k.columns["occupancy"] <= 1 and k.columns["registers"] == first["registers"]
        assert k.columns["spill_bytes"] == first["spill_store_bytes"] + first["spill_load_bytes"]
        # nvcc compiled it for this arch (ptxas says so), and the block TVM launches is the one
        # the kernel was compiled for (__launch_bounds__ in the CUDA source)
        assert f"for '{arch}'" in library.with_suffix(".ptxas.txt").read_text()
        bounds = re.search(r"__launch_bounds__\((\d+)\)", library.with_suffix(".cu").read_text())
        assert int(bounds.group(1)) == first["threads_per_block"]


@pytest.mark.parametrize("arch", ARCHS)
def test_the_resource_table_has_a_row_per_kernel(bundles, arch):
    import pandas as pd

    table = pd.read_csv(bundles[arch] / bundle.RESOURCES)
    kit = bundle.read(bundles[arch])
    assert len(table) == len(kit.kernels)  # DLight makes one device function per conv
    assert sorted(table["spec_id"]) == sorted(k.spec_id for k in kit.kernels)
    for column in ("registers", "shared_bytes", "spill_store_bytes", "local_bytes", "occupancy",
                   "blocks_per_sm", "grid", "block", "dlight_rule", "build_s"):
        assert table[column].notna().all(), column
    assert (table["registers"] > 0).all() and table["occupancy"].between(0, 1, "right").all()


def test_a_manifest_round_trips(bundles, tmp_path):
    copy = shutil.copytree(bundles["sm_90"], tmp_path / "copy")
    kit = bundle.read(copy)
    bundle.write(copy, kit.meta, kit.layers, kit.kernels)
    again = bundle.read(copy)
    assert again.meta == kit.meta and again.layers == kit.layers and again.kernels == kit.kernels
    assert [s.id for s in again.layers] == [s.id for s in kit.layers]  # ConvSpecs, rebuilt


def visible_gpu(monkeypatch, name="NVIDIA H200", capability="9.0", driver_cuda="13.0"):
    """This machine as if it had a GPU: NVML facts and torch's answer."""
    facts = {"gpu": name, "gpu_driver": "580.00", "gpu_compute_capability": capability,
             "gpu_driver_cuda": driver_cuda}
    monkeypatch.setattr(cuda, "gpu_facts", lambda index=0: facts)
    monkeypatch.setattr(cuda, "torch_sees_gpu", lambda: True)


def one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pwbench: error: ") and "\n" not in err, err
    return err


@pytest.mark.cli
def test_a_bundle_for_another_arch_is_refused_in_one_line(bundles, monkeypatch, capsys):
    visible_gpu(monkeypatch)
    err = one_line_error(capsys, ["run", "--target", "cuda", "--kernels", str(bundles["sm_80"])])
    assert "built for sm_80" in err and "is sm_90" in err and "--arch sm_90" in err


def _with_manifest(source, copy, **changes):
    """A copy of a bundle whose manifest says something else (another TVM, another tvm_ffi)."""
    shutil.copytree(source, copy)
    manifest = json.loads((copy / bundle.MANIFEST).read_text())
    (copy / bundle.MANIFEST).write_text(json.dumps({**manifest, **changes}))
    return copy


@pytest.mark.cli
def test_a_bundle_for_another_tvm_version_is_refused_in_one_line(bundles, tmp_path, monkeypatch,
                                                                 capsys):
    copy = _with_manifest(bundles["sm_90"], tmp_path / "old", tvm="0.26.0")
    visible_gpu(monkeypatch)
    err = one_line_error(capsys, ["run", "--target", "cuda", "--kernels", str(copy)])
    assert "built with TVM 0.26.0" in err and "TVM runtime is 0.27" in err


def test_a_driver_too_old_or_another_gpu_is_refused(monkeypatch):
    visible_gpu(monkeypatch, driver_cuda="12.4")
    target = cuda.CudaGPU()
    assert "supports CUDA 12.4" in target.kernels_problem({"arch": "sm_90", "cuda_toolkit": "13.0.88"})
    visible_gpu(monkeypatch, driver_cuda="13.0")  # minor-version compatibility: 13.2 runs on 13.0
    assert target.kernels_problem({"arch": "sm_90", "cuda_toolkit": "13.2.51"}) is None
    visible_gpu(monkeypatch, name="NVIDIA H100 80GB HBM3")
    assert target.kernels_problem({"arch": "sm_90", "cuda_toolkit": "13.0.88"}) is None
    problem = target.kernels_problem({"arch": "sm_90", "tuned_for_gpu": "NVIDIA H200"})
    assert "tuned on a NVIDIA H200" in problem and "never applied to another GPU" in problem


def test_the_manifest_names_tvm_ffi_and_hashes_every_library(bundles, tmp_path):
    import hashlib

    kit = bundle.read(bundles["sm_90"])
    assert kit.meta["tvm_ffi"] == importlib.metadata.version("apache-tvm-ffi")
    for k in kit.kernels:
        data = bundle.library_path(kit.dir, k).read_bytes()
        assert k.sha256 == hashlib.sha256(data).hexdigest()
    copy = shutil.copytree(bundles["sm_90"], tmp_path / "other")
    library = bundle.library_path(copy, kit.kernels[0])
    library.write_bytes(library.read_bytes() + b"\0")  # e.g. a copy mixed with another bundle's
    with pytest.raises(UserError, match="1 of its libraries differ from the ones built"):
        bundle.read(copy)


@pytest.mark.cli
def test_a_bundle_for_another_tvm_ffi_is_refused_in_one_line(bundles, tmp_path, monkeypatch,
                                                             capsys):
    copy = _with_manifest(bundles["sm_90"], tmp_path / "ffi", tvm_ffi="0.1.15")
    visible_gpu(monkeypatch)
    err = one_line_error(capsys, ["run", "--target", "cuda", "--kernels", str(copy)])
    assert "built with tvm_ffi 0.1.15" in err


def test_a_damaged_or_missing_bundle_is_one_line(bundles, tmp_path):
    with pytest.raises(UserError, match="not a kernel bundle .*pwbench build"):
        bundle.read(tmp_path)
    copy = shutil.copytree(bundles["sm_90"], tmp_path / "partial")
    next(copy.glob("sm_90/*.so")).unlink()
    with pytest.raises(UserError, match="lacks 1 of its libraries"):
        bundle.read(copy)
    (copy / bundle.MANIFEST).write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        bundle.read(copy)


def test_a_runtime_only_tvm_loads_every_kernel_of_the_bundle(bundles, tmp_path):
    """scripts/make_tvm_runtime.py (from this interpreter's TVM), then a bare process with only
    that on its path: runtime-only TVM, its CUDA loader, every library (the stand-in libcuda
    plays the driver, so nothing can run)."""
    rt = tmp_path / "rt"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tvm_runtime.py"), "--out", str(rt),
                    "--python-version", PYTHON, "--from-installed", "--no-tar"], check=True,
                   capture_output=True, timeout=300)
    assert not (rt / "site" / "tvm" / "lib" / "libtvm_compiler.so").exists()
    check = f"""
import json, os
os.environ["TVM_USE_RUNTIME_LIB"] = "1"
from pwbench.tvm_bridge import cuda_stub
cuda_stub.load()
from pwbench.tvm_bridge import runtime
import tvm
from tvm.base import _LOADED_LIBS
runtime.enable_cuda()
kit = json.load(open({str(bundles['sm_90'] / bundle.MANIFEST)!r}))
kinds = [[i.kind for i in tvm.runtime.load_module({str(bundles['sm_90'])!r} + "/" + k["library"])
          .imports] for k in kit["kernels"]]
print(json.dumps({{"tvm": tvm.__file__, "libs": sorted(_LOADED_LIBS), "kinds": kinds,
                  "cuda": tvm.runtime.enabled("cuda"), "gpu": tvm.cuda(0).exist}}))
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(rt / "site"),
           "PWBENCH_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["tvm"].startswith(str(rt)) and seen["libs"] == ["tvm_runtime"]  # no compiler
    assert seen["cuda"] and not seen["gpu"]
    assert seen["kinds"] == [["cuda"]] * 2 * len(KINDS)


def test_tuned_schedules_from_a_database_build_and_remember_their_gpu(tmp_path, monkeypatch,
                                                                      capsys):
    """A database tuned on an H200 (here: a DLight schedule recorded as if measured there)
    builds without a GPU; the bundle records the GPU and refuses another one; a layer the
    database lacks says where to tune it."""
    import tvm
    from tvm.s_tir import dlight, meta_schedule as ms

    from pwbench.tvm_bridge import database, topi_conv, tvm_targets
    from pwbench.workloads import suites

    (tmp_path / "s.toml").write_text(suite_text(("pointwise", "full"), ("NCHW",)))
    tuned, missing = suites.load(str(tmp_path / "s.toml")).layers
    target = tvm_targets.cuda_target(None, "sm_90")
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    facts = {"gpu": "NVIDIA H200", "cuda_toolkit": toolkits.cuda_toolkit_version()}
    (db_dir / database.FINGERPRINT).write_text(json.dumps(database.fingerprint(target, facts)))
    (db_dir / database.LAYERS).write_text(json.dumps(
        {tuned.id: {"trials": 8, "tune_s": 3.0, "curve": [[8, 3.0, 2e-5]]}}))
    func = topi_conv.primfunc(tuned)
    with tvm.target.Target(target) as tvm_target:
        schedule = dlight.gpu.Matmul().apply(func, tvm_target, False)
    db = ms.database.JSONDatabase(work_dir=str(db_dir), module_equality="structural")
    workload = db.commit_workload(tvm.IRModule({"main": func}))
    db.commit_tuning_record(ms.database.TuningRecord(schedule.trace, workload, run_secs=[2e-5],
                                                     target=tvm_target))

    out = tmp_path / "bundle"
    assert cli.main(["build", "--suite", str(tmp_path / "s.toml"), "--backend", "tvm-tuned",
                     "--tuning-dir", str(db_dir), "--output", str(out)]) == 1  # one layer lacks
    kit = bundle.read(out)
    good, bad = kit.kernels
    assert good.columns["tuning"] == "database" and good.columns["tuned_for_gpu"] == "NVIDIA H200"
    assert good.columns["registers"] > 0 and kit.built_for["tuned_for_gpu"] == "NVIDIA H200"
    assert "holds no schedule" in bad.error and "pwbench tune" in bad.error
    capsys.readouterr()
    visible_gpu(monkeypatch, name="NVIDIA H100 80GB HBM3")
    err = one_line_error(capsys, ["run", "--target", "cuda", "--kernels", str(out)])
    assert "tuned on a NVIDIA H200" in err


@pytest.mark.cli
def test_pwbench_build_through_the_console_script(pwbench, tmp_path):
    (tmp_path / "s.toml").write_text(suite_text(("pointwise", "depthwise"), ("NHWC",)))
    done = pwbench("build", "--target", "cuda", "--arch", "sm_90", "--suite", tmp_path / "s.toml",
                   "--output", tmp_path / "b", timeout=600, env=None)
    assert done.returncode == 0, done.stderr
    assert "kernel resources (sm_90" in done.stdout and "pointwise.NHWC" in done.stdout
    assert re.search(r"Matmul .* Fallback", done.stdout, re.S), done.stdout
    assert "bundle: " in done.stdout and "build seconds per kernel" in done.stdout
    assert "--kernels" in done.stdout  # says how to run it
    assert len(bundle.read(tmp_path / "b").kernels) == 2


@pytest.mark.cli
def test_pwbench_build_refuses_torch_and_a_bundle_directory_twice(pwbench, bundles):
    done = pwbench("build", "--backend", "torch", "--output", "/tmp/never")
    assert done.returncode == 2 and "not built ahead of time" in done.stderr
    done = pwbench("build", "--output", bundles["sm_90"])
    assert done.returncode == 2 and "already holds a kernel bundle" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
