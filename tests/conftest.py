"""Shared test helpers. Every test belongs to one group by what it needs (a pytest marker):

  unit    pure Python: shapes, statistics, schemas, files
  cpu     torch and TVM kernels on tiny shapes on this CPU
  cross   code generation for other targets (aarch64, CUDA) that needs no such device
  device  a GPU or a remote board; skipped with the reason when none is present
  cli     the installed `pwbench` console script, run as a user would

`python -m pytest -m unit` runs one group; a test without a group fails collection.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
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
