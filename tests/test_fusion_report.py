"""The report on a run with blocks: the fusion gain table (each block next to the sum of its layers,
same run, same backend), the seeds' claims at block level (params and FLOP ratios vs the full
conv it replaces, time ratios whole and layer by layer), the network total, and figures with
block kinds. The run is synthetic (RunWriter, chosen medians), its rows the real workloads' own."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pwbench import report
from pwbench.report import fusion, runs
from pwbench.store import results
from pwbench.workloads import suites

pytestmark = pytest.mark.unit

SUITE = """[suite]
description = "fusion report test"
[[block]]
name = "sep"
kind = "separable"
in_channels = 32
out_channels = 64
size = 14
replaces = true
[[block]]
name = "ir"
kind = "inverted_residual"
in_channels = 16
out_channels = 16
size = 14
"""
# backend -> layer -> median seconds; "tvm" does not compute blocks (their rows are skipped)
MEDIANS = {
    "torch": {"sep": 4e-3, "sep/dw": 1e-3, "sep/pw": 2e-3, "sep/full": 10e-3,
              "ir": 3e-3, "ir/expand": 1e-3, "ir/dw": 1e-3, "ir/project": 2e-3},
    "onnxruntime": {"sep": 1e-3, "sep/dw": 1e-3, "sep/pw": 1e-3, "sep/full": 4e-3,
                    "ir": 2e-3, "ir/expand": 1e-3, "ir/dw": 1e-3, "ir/project": None},
    "tvm": {"sep/dw": 5e-3, "sep/pw": 5e-3, "sep/full": 20e-3,
            "ir/expand": 1e-3, "ir/dw": 1e-3, "ir/project": 1e-3},
}
META = {"cpu_model": "Test CPU", "cores": 2, "threads": 1, "target": "cpu", "hostname": "ci",
        "suite": "fusion", "peaks": {"flops_per_s": 1e11, "bytes_per_s": 1e10, "target": "cpu",
                                     "threads": 1, "flops_method": "given", "bytes_method": "given",
                                     "source": "file"}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fusion")
    (tmp / "fusion.toml").write_text(SUITE)
    workloads = suites.load(str(tmp / "fusion.toml")).layers
    writer = results.RunWriter(tmp / "run", META)
    for backend, medians in MEDIANS.items():
        for w in workloads:
            median = medians.get(w.label)
            check = "skipped" if w.label not in medians else "failed" if median is None else "passed"
            samples = [median] * 5 if median else []
            writer.add({"suite": "fusion", **w.describe(), "backend": backend, "target": "cpu",
                        "threads": 1, "variant": "", "cache": "hot", "clock": "host",
                        "check": check, "max_abs_err": math.nan, "max_rel_err": math.nan,
                        "error": "", "samples_s": samples, "number": 1, "process": 0})
    from pwbench.analysis import roofline
    from pwbench.targets import peaks

    given = peaks.Peaks.from_dict(META["peaks"], "test")
    writer.finish(decorate=lambda r: r | roofline.row_columns(r["flops"], r["bytes"], r["dtype"],
                                                              r["median_s"], given))
    return tmp / "run"


def test_fusion_gain_is_the_sum_of_a_blocks_layers_over_the_block(run_dir):
    frame = fusion.gains(runs.load([run_dir])[0]).set_index(["block", "backend"])
    assert list(frame.index) == [("sep", "torch"), ("sep", "onnxruntime"), ("ir", "torch"),
                                 ("ir", "onnxruntime")]  # tvm computes no block: no row
    assert frame.loc[("sep", "torch"), "gain"] == pytest.approx((1e-3 + 2e-3) / 4e-3)
    assert frame.loc[("sep", "onnxruntime"), "gain"] == pytest.approx(2.0)
    assert frame.loc[("ir", "torch"), "layers_s"] == pytest.approx(4e-3)
    assert frame.loc[("ir", "torch"), "layers"] == "3/3"
    # a layer that failed its check has no time: no sum, no gain (never a partial sum)
    assert frame.loc[("ir", "onnxruntime"), "layers"] == "2/3"
    assert math.isnan(frame.loc[("ir", "onnxruntime"), "gain"])


@pytest.fixture(scope="module")
def out(run_dir):
    built = report.build([run_dir], run_dir.parent / "out")
    assert built.index.exists()
    return run_dir.parent / "out"


def test_the_report_shows_fusion_and_the_seeds_claims_at_block_level(run_dir, out):
    tables = out / "tables"
    gains = pd.read_csv(tables / "fusion_ci-cpu-1t.csv")
    assert set(gains["backend"]) == {"torch", "onnxruntime"}
    theory = pd.read_csv(tables / "theory_ci-cpu-1t.csv").set_index("backend")
    sep = suites.load(str(run_dir.parent / "fusion.toml")).layers[0]
    assert theory.loc["torch", "block"] == "depthwise-separable"
    assert theory.loc["torch", "flop_ratio"] == pytest.approx(sep.flops / sep.replaces().flops)
    assert theory.loc["torch", "seed_formula"] == pytest.approx(1 / 64 + 1 / 9)
    assert theory.loc["torch", "params_ratio"] == pytest.approx(sep.params / sep.replaces().params)
    assert theory.loc["torch", "time_ratio"] == pytest.approx(4e-3 / 10e-3)  # the block whole
    assert theory.loc["torch", "layers_time_ratio"] == pytest.approx(3e-3 / 10e-3)  # one by one
    assert theory.loc["tvm", "layers_time_ratio"] == pytest.approx(10e-3 / 20e-3)
    assert math.isnan(theory.loc["tvm", "time_ratio"])
    index = (out / "index.html").read_text()
    assert "Fusion gain" in index and "survives worse at block level" in index
    assert "geometric mean fusion gain" in index
    for figure in ("fusion_ci-cpu-1t.png", "roofline_ci-cpu-1t.png", "selection_fusion.png"):
        assert (out / "figures" / figure).stat().st_size > 0


def test_the_network_total_does_not_count_the_layers_measured_alone(out):
    latency = pd.read_csv(out / "tables" / "latency_ci-cpu-1t.csv").set_index("layer")
    total = latency.loc["network total"]
    assert total["torch median_s"] == pytest.approx(4e-3 + 10e-3 + 3e-3)  # sep, sep/full, ir
    assert total["shape"] == "3 layers (not the 5 measured alone for fusion gains)"
