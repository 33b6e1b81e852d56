"""Kernel bundles end to end on this CPU: `pwbench build --target cpu` then `pwbench run --kernels`
loads, verifies and times the bundle's kernels next to torch (the same path a GPU machine takes
with CUDA kernels); a bundle's layers are fixed; a backend it lacks is not built silently."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from pwbench import cli
from pwbench.store import bundle

pytestmark = [pytest.mark.cpu, pytest.mark.tvm,
              pytest.mark.skipif(importlib.util.find_spec("tvm") is None, reason="needs apache-tvm")]
SUITE = """[suite]
description = "two layers"
[[layer]]
name = "pw"
in_channels = 8
out_channels = 16
size = 6
[[layer]]
name = "pw.again"
in_channels = 8
out_channels = 16
size = 6
count = 2
[[layer]]
name = "dw"
in_channels = 8
depthwise = true
size = 7
kernel_size = 3
padding = 1
layout = "NHWC"
"""
FAST = ["--processes", "1", "--warmup-ms", "2", "--sample-ms", "10", "--threads", "1"]


@pytest.fixture(scope="module")
def cpu_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    (root / "s.toml").write_text(SUITE)
    assert cli.main(["build", "--target", "cpu", "--suite", str(root / "s.toml"),
                     "--output", str(root / "b")]) == 0
    return root / "b"


def test_a_bundle_runs_through_the_pipeline_next_to_torch(cpu_bundle, tmp_path):
    kit = bundle.read(cpu_bundle)
    assert len(kit.kernels) == 2 and [s.name for s in kit.layers] == ["pw", "pw.again", "dw"]
    assert cli.main(["run", "--target", "cpu", "--kernels", str(cpu_bundle), *FAST,
                     "--output", str(tmp_path / "run")]) == 0
    rows = pd.read_parquet(tmp_path / "run" / "records.parquet")
    assert sorted(rows["backend"]) == ["torch"] * 3 + ["tvm"] * 3  # every layer, both backends
    assert set(rows["check"]) == {"passed"} and (rows["median_s"] > 0).all()
    tvm = rows[rows["backend"] == "tvm"]
    assert (tvm["kernel_bundle"] == str(cpu_bundle)).all()
    assert tvm.set_index("layer").loc["pw.again", "count"] == 2  # names and counts come along


@pytest.mark.parametrize("args, message", [
    (["--batch", "2"], "cannot change the layers of a kernel bundle"),
    (["--backend", "torch,tvm-tuned"], "backend tvm-tuned is not in kernel bundle"),
])
def test_a_bundle_is_run_as_built_or_not_at_all(cpu_bundle, tmp_path, capsys, args, message):
    assert cli.main(["run", "--target", "cpu", "--kernels", str(cpu_bundle), *args,
                     "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
