"""The pipeline: one broken kernel does not stop a sweep, wrong kernels are never timed."""

import math
import types

import numpy as np

from pwbench import targets
from pwbench.measure import runner, timing
from pwbench.workloads import suites
from pwbench.backends import torch_backend

TWO_NAMES_ONE_SHAPE = """
[[layer]]
name = "a"
in_channels = 4
out_channels = 8
size = 6
[[layer]]
name = "b"
in_channels = 4
out_channels = 8
size = 6
count = 3
"""


def make_plan(tmp_path, modules):
    path = tmp_path / "s.toml"
    path.write_text(TWO_NAMES_ONE_SHAPE)
    config = runner.RunConfig(suite=str(path), threads=1, output=tmp_path / "run",
                              budget=timing.Budget(warmup_ms=1, sample_ms=5))
    suite = suites.load(str(path))
    return runner.Plan(config, suite, list(suite.layers), targets.resolve("cpu"), modules)


def backend(prepare):
    return types.SimpleNamespace(prepare=prepare, versions=lambda: {})


def test_a_recurring_shape_is_measured_once_and_recorded_under_each_name(tmp_path):
    calls = []

    def prepare(spec, target):
        calls.append(spec.name)
        return torch_backend.prepare(spec, target)

    rows = runner.execute(make_plan(tmp_path, {"torch": backend(prepare)})).rows
    assert calls == ["a"]
    assert [r["layer"] for r in rows] == ["a", "b"] and [r["count"] for r in rows] == [1, 3]
    assert rows[0]["samples_s"] == rows[1]["samples_s"] and rows[0]["check"] == "passed"


def test_errors_and_wrong_kernels_become_rows_not_crashes(tmp_path):
    def broken(spec, target):
        raise RuntimeError("compiler exploded")

    def wrong(spec, target):
        kernel = torch_backend.prepare(spec, target)
        result = kernel.result
        kernel.result = lambda: result() + np.float32(1)
        return kernel

    plan = make_plan(tmp_path, {"broken": backend(broken), "wrong": backend(wrong)})
    rows = runner.execute(plan).rows
    broken_row, wrong_row = rows[0], rows[1]
    assert broken_row["check"] == "" and "RuntimeError: compiler exploded" in broken_row["error"]
    assert wrong_row["check"] == "failed" and "differ" in wrong_row["error"]
    assert all(math.isnan(r["median_s"]) and r["samples_s"] == [] for r in rows)
