"""Shared test helpers. Every test belongs to one group by what it needs (a pytest marker):

  unit    pure Python: shapes, statistics, schemas, files
  cpu     torch and TVM kernels on tiny shapes on this CPU
  cross   code generation for other targets (aarch64, CUDA) that needs no such device
  device  a GPU or a remote board; skipped with the reason when none is present
  cli     the installed `pwbench` console script, run as a user would

`python -m pytest -m unit` runs one group; a test without a group fails collection.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

GROUPS = ("unit", "cpu", "cross", "device", "cli", "bench")
PWBENCH = shutil.which("pwbench", path=str(Path(sys.executable).parent)) or shutil.which("pwbench")


def run_pwbench(*args, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    """The installed console script, as a user types it."""
    assert PWBENCH, "the pwbench console script is not installed (pip install -e .)"
    return subprocess.run([PWBENCH, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


@pytest.fixture
def pwbench():
    return run_pwbench


def pytest_collection_modifyitems(items):
    for item in items:
        if not any(item.get_closest_marker(g) for g in GROUPS):
            raise pytest.UsageError(f"{item.nodeid}: no test group marker ({', '.join(GROUPS)})")


# ---- the emulated aarch64 board (qemu), shared by every test that runs aarch64 kernels -------------
def _runtime_or_skip():
    from pwbench.targets import local_fleet

    runtime = local_fleet.aarch64_runtime()
    have_tvm = importlib.util.find_spec("tvm") is not None
    problem = (local_fleet.aarch64_problem(runtime) if have_tvm else "apache-tvm is not installed") \
        or (None if shutil.which("aarch64-linux-gnu-gcc") else "aarch64-linux-gnu-gcc is missing")
    if problem:
        if os.environ.get("PWBENCH_REQUIRE_AARCH64") == "1":
            pytest.fail(f"PWBENCH_REQUIRE_AARCH64=1 but {problem}")
        pytest.skip(problem)
    return runtime


@pytest.fixture(scope="session")
def emulated(tmp_path_factory):
    """`pwbench fleet local --background` (a tracker, an x86 board, the emulated aarch64 board),
    started once for the session (test_arm, test_spaces), stopped with `--stop` at the end."""
    runtime = _runtime_or_skip()
    from pwbench.targets import local_fleet

    tmp = tmp_path_factory.mktemp("emulated")
    state, port = tmp / "fleet.json", local_fleet.free_port()
    env = dict(os.environ, PWBENCH_CACHE_DIR=str(tmp / "cache"), PWBENCH_AARCH64_RUNTIME=str(runtime))
    common = ["--state-file", state]
    start = time.monotonic()
    proc = run_pwbench("fleet", "local", "--background", "--port", port, "--minutes", 20, *common,
                       env=env, timeout=400)
    try:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        print(f"emulated fleet up in {time.monotonic() - start:.0f} s")
        yield {"tracker": f"127.0.0.1:{port}", "port": port, "env": env, "tmp": tmp}
    finally:
        stop = run_pwbench("fleet", "local", "--stop", *common, env=env, timeout=60)
        assert stop.returncode == 0 and "stopped the local fleet" in stop.stdout, stop.stdout
        fleet = local_fleet.Fleet.load(state)
        assert fleet is None, "the state file is removed once everything is stopped"
