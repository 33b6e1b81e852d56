"""The first run on a GPU as one prepared command.

    python scripts/gpu_check.py prepare --out DIR     # here: no GPU needed (TVM, nvcc, pip)
    python scripts/gpu_check.py run DIR               # there: Python 3.12, torch with CUDA
    python DIR/gpu_check.py run DIR                   # the same, from the folder alone

`prepare` makes a folder (under 60 MiB) that holds everything the GPU machine lacks: TVM's
runtime for CPython 3.12 with pwbench (scripts/make_tvm_runtime.py; the wheels are downloaded
into the pwbench cache, not into DIR), kernel bundles for sm_90 (`pwbench build`: the kinds
suite below in fp32 and fp16, one fp16 layer on DLight's tensor-core path, one bf16 layer, and a
long and a tiny layer for the probe), the device tests, the probe (scripts/gpu_probe.py) and this
script; `manifest.json` names the arch, the TVM and tvm_ffi versions and every file's size.

`run` (well under 7 minutes) runs the device tests, each bundle hot and cold (and the fp32 kinds
with --cuda-graphs), the probe, and a report, every step under its own time limit and all of them
under one deadline, and puts every log, run directory and the probe's figures into one tarball
(`--results`, default DIR/results.tgz). Without a GPU it is one line, exit 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = "3.12"  # the GPU machine's CPython
ARCH = "sm_90"
MAX_MIB = 60
NEEDED = ("numpy", "pandas", "pyarrow", "rich", "scipy", "cpuinfo", "pynvml", "pytest", "torch")
DEADLINE_S = 400.0  # the whole run; each step also has its own limit
KINDS = """[suite]
description = "one real layer of every kind (ResNet-50, MobileNetV2, ResNeXt), batch 1"
batch = 1
""" + "".join(f"""
[[layer]]
name = "{name}.{layout}"
layout = "{layout}"
{fields}
""" for layout in ("NCHW", "NHWC") for name, fields in (
    ("pointwise", "in_channels = 256\nout_channels = 64\nsize = 56"),
    ("depthwise", "in_channels = 144\ndepthwise = true\nsize = 56\nkernel_size = 3\npadding = 1"),
    ("grouped", ("in_channels = 128\nout_channels = 128\ngroups = 32\nsize = 28\n"
                 "kernel_size = 3\npadding = 1")),
    ("full", "in_channels = 64\nout_channels = 64\nsize = 56\nkernel_size = 3\npadding = 1"),
    ("strided", ("in_channels = 128\nout_channels = 128\nsize = 56\nkernel_size = 3\n"
                 "stride = 2\npadding = 1")),
    ("dilated", ("in_channels = 256\nout_channels = 256\nsize = 28\nkernel_size = 3\n"
                 "padding = 2\ndilation = 2"))))
EXTRA = """[suite]
description = "DLight's tensor-core path (fp16, every GEMM extent above 64) and a bf16 layer"
batch = 1

[[layer]]
name = "pointwise.tensorcore"
in_channels = 256
out_channels = 256
size = 28
dtype = "float16"

[[layer]]
name = "full.bf16"
in_channels = 64
out_channels = 64
size = 28
kernel_size = 3
padding = 1
dtype = "bfloat16"
"""
PROBE = """[suite]
description = "the probe's kernels: one long (tens of GFLOP) and one tiny (microseconds)"

[[layer]]
name = "long"
batch = 8
in_channels = 256
out_channels = 256
size = 56
kernel_size = 3
padding = 1

[[layer]]
name = "tiny"
batch = 1
in_channels = 16
out_channels = 16
size = 8
"""
BUNDLES = {"kinds_fp32": (KINDS, None), "kinds_fp16": (KINDS, "float16"),
           "extra": (EXTRA, None), "probe": (PROBE, None)}


def fail(message: str, status: int = 2):
    print(f"gpu_check: {message}", file=sys.stderr)
    raise SystemExit(status)


# ---- prepare (here) --------------------------------------------------------------------------

def prepare(out: Path) -> None:
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        fail(f"{out} is not empty: give a new folder to --out")
    started = time.time()
    sys.path.insert(0, str(HERE))
    import make_tvm_runtime

    try:
        make_tvm_runtime.build(out / "rt", PYTHON)
    except SystemExit as exc:
        fail(f"the TVM runtime for Python {PYTHON} could not be made: {exc}")
    site = out / "rt" / "site"
    for name, (text, dtype) in BUNDLES.items():
        build_bundle(out, name, text, dtype)
    copy_files(out)
    manifest = describe(out, site, time.time() - started)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    problems = check_prepared(out, manifest)
    if problems:
        fail(f"{out} is not ready: {'; '.join(problems)}", 1)
    print(f"{out}: {manifest['size_mib']:.1f} MiB, {manifest['kernels']} kernels in "
          f"{len(BUNDLES)} bundles for {ARCH}, TVM runtime for CPython {PYTHON}; on the GPU "
          f"machine: python {out.name}/gpu_check.py run {out.name}")


def build_bundle(out: Path, name: str, text: str, dtype: str | None) -> None:
    suites = out / "suites"
    suites.mkdir(exist_ok=True)
    suite = suites / f"{name}.toml"
    suite.write_text(text)
    command = [sys.executable, "-m", "pwbench", "build", "--target", "cuda", "--arch", ARCH,
               "--suite", str(suite), "--output", str(out / "bundles" / name)]
    command += ["--dtype", dtype] if dtype else []
    print(f"building {name}: {' '.join(command[2:])}", flush=True)
    done = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"pwbench build of bundle {name} failed: {(done.stderr or done.stdout).strip()[-400:]}", 1)


def copy_files(out: Path) -> None:
    """The probe, this script and the device tests (with the markers pytest needs)."""
    shutil.copy2(HERE / "gpu_probe.py", out / "probe.py")
    shutil.copy2(Path(__file__), out / "gpu_check.py")
    tests = out / "tests"
    tests.mkdir()
    for name in ("conftest.py", "test_cuda_device.py", "test_cuda_build.py"):
        shutil.copy2(HERE.parent / "tests" / name, tests / name)
    markers = ["unit", "cpu", "cross", "device", "cli", "tvm", "bench"]
    (tests / "pytest.ini").write_text("[pytest]\naddopts = -ra\nmarkers =\n" +
                                      "".join(f"    {m}: see pwbench's pyproject\n" for m in markers))


def describe(out: Path, site: Path, seconds: float) -> dict:
    from pwbench import env
    from pwbench.store import bundle

    kits = {name: bundle.read(out / "bundles" / name) for name in BUNDLES}
    files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*"))
             if p.is_file() and not p.is_symlink()}
    return {"format": "pwbench-gpu-check", "python": PYTHON, "arch": ARCH,
            "tvm": next(iter(kits.values())).meta.get("tvm"),
            "tvm_ffi": next(iter(kits.values())).meta.get("tvm_ffi"),
            "bundles": {name: {"arch": k.built_for.get("arch"), "tvm_ffi": k.meta.get("tvm_ffi"),
                               "cuda_toolkit": k.built_for.get("cuda_toolkit"),
                               "kernels": len(k.kernels),
                               "errors": [k2.error for k2 in k.kernels if k2.error]}
                        for name, k in kits.items()},
            "kernels": sum(len(k.kernels) for k in kits.values()),
            "size_mib": sum(files.values()) / 2**20, "files": files,
            "runtime_site": str(site.relative_to(out)), "prepare_s": round(seconds, 1),
            "git_commit": env.git_commit(),
            "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def check_prepared(out: Path, manifest: dict) -> list[str]:
    sys.path.insert(0, str(HERE))
    import make_tvm_runtime

    problems = make_tvm_runtime.problems(out / manifest["runtime_site"], PYTHON)
    if manifest["size_mib"] >= MAX_MIB:
        problems.append(f"{manifest['size_mib']:.1f} MiB, more than {MAX_MIB}")
    for name, kit in manifest["bundles"].items():
        if kit["arch"] != ARCH or not kit["tvm_ffi"] or kit["errors"] or not kit["kernels"]:
            problems.append(f"bundle {name}: {kit}")
    return problems


# ---- run (there) -----------------------------------------------------------------------------

def run(folder: Path, results: Path | None) -> int:
    folder = folder.resolve()
    manifest = ready(folder)
    work = folder / "results"
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    env = os.environ | {"PYTHONPATH": str(folder / manifest["runtime_site"]),
                        "PWBENCH_CACHE_DIR": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    deadline = time.time() + DEADLINE_S
    steps = []
    for name, command, limit in plan_steps(folder, work):
        steps.append(step(name, command, limit, env, work, deadline))
    (work / "summary.json").write_text(json.dumps({"steps": steps, "manifest": manifest}, indent=1))
    for s in steps:
        print(f"{s['status']:>8}  {s['seconds']:6.1f} s  {s['name']}")
    tarball = (results or folder / "results.tgz").resolve()
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(work, arcname="results", filter=lambda t: None if "/cache" in t.name else t)
    print(f"results: {tarball} ({tarball.stat().st_size / 2**20:.1f} MiB)")
    return 0 if all(s["status"] == "ok" for s in steps) else 1


def ready(folder: Path) -> dict:
    """The prepared folder's manifest, once this machine can run it; else one line, exit 2."""
    path = folder / "manifest.json"
    if not path.is_file():
        fail(f"{folder} is not a prepared folder (no manifest.json): make one with "
             "'python scripts/gpu_check.py prepare --out DIR'")
    manifest = json.loads(path.read_text())
    if not _importable("torch"):
        fail("torch is not installed here: run this on the GPU machine (Python with torch and CUDA)")
    import torch

    if not torch.cuda.is_available():
        fail("no CUDA GPU is visible here (torch.cuda.is_available() is False): run this on the "
             "GPU machine")
    here = ".".join(platform.python_version_tuple()[:2])
    if here != manifest["python"]:
        fail(f"{folder}'s TVM runtime is for Python {manifest['python']}, and this is Python "
             f"{here}: run it with python{manifest['python']}")
    missing = [m for m in NEEDED if not _importable(m)]
    if missing:
        fail(f"this machine lacks the Python packages {', '.join(missing)}: carry them as wheels")
    return manifest


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def plan_steps(folder: Path, work: Path) -> list[tuple]:
    """(name, command or a function giving it, seconds allowed)."""
    py, runs = sys.executable, work / "runs"
    steps = [("device tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(folder / "tests" / "test_cuda_device.py")], 200.0)]
    for name in BUNDLES:
        if name == "probe":
            continue
        for cache in ("hot", "cold"):
            steps.append((f"run {name} {cache}", pwbench_run(folder, name, runs / f"{name}_{cache}",
                                                             "--cache", cache), 90.0))
    steps.append(("run kinds_fp32 hot --cuda-graphs",
                  pwbench_run(folder, "kinds_fp32", runs / "kinds_fp32_graphs", "--cuda-graphs"), 90.0))
    steps.append(("probe", [py, str(folder / "probe.py"), "--kernels",
                            str(folder / "bundles" / "probe"), "--out", str(work / "probe.json")], 120.0))
    steps.append(("report", lambda: [py, "-m", "pwbench", "report", *map(str, sorted(
        runs.glob("*"))), "--out", str(work / "report")], 60.0))  # the runs made by then
    return steps


def pwbench_run(folder: Path, bundle: str, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pwbench", "run", "--target", "cuda", "--kernels",
            str(folder / "bundles" / bundle), "--processes", "1", "--warmup-ms", "50",
            "--sample-ms", "100", "--output", str(output), *extra]


def step(name: str, command, limit: float, env: dict, work: Path,
         deadline: float) -> dict:
    """One step, its output in logs/; skipped when the deadline is too near to start it."""
    left = deadline - time.time()
    if left < 20:
        return {"name": name, "status": "skipped", "seconds": 0.0, "why": "out of time"}
    command = command() if callable(command) else command
    log = work / "logs" / (name.replace(" ", "_").replace("--", "") + ".log")
    began = time.time()
    with open(log, "w") as out:
        try:
            done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=min(limit, left), cwd=work)
            status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
        except subprocess.TimeoutExpired:
            status = "timeout"
    return {"name": name, "status": status, "seconds": time.time() - began,
            "command": " ".join(command), "log": str(log.relative_to(work))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="here: the folder the GPU machine needs")
    p.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="there: every check, into one tarball")
    r.add_argument("dir", type=Path)
    r.add_argument("--results", type=Path, help="the tarball (default DIR/results.tgz)")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out)
    else:
        raise SystemExit(run(args.dir, args.results))


if __name__ == "__main__":
    main()
