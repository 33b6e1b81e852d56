"""TVM vs the best library (report/speedups.py): the library side is the fastest verified row of
torch eager, torch-frozen and onnxruntime in either layout, TVM's blocked variant is never
counted, a failed row never counts, and the suite total adds each side's best times each layer's
count, without the layers measured alone for a block."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pwbench.report import speedups

pytestmark = pytest.mark.unit


def _row(layer, backend, layout, median_s, kind="pointwise", variant="", count=1, check="passed",
         part_of=""):
    return {"layer": layer, "spec_id": f"{layer}_id_{layout.lower()}", "kind": kind,
            "backend": backend, "variant": variant, "layout": layout, "median_s": median_s,
            "check": check, "count": count, "part_of": part_of}


ROWS = pd.DataFrame([
    _row("a", "torch", "NCHW", 4e-3, count=3), _row("a", "torch", "NHWC", 3e-3, count=3),
    _row("a", "torch-frozen", "NHWC", 2.5e-3, count=3),
    _row("a", "onnxruntime", "NCHW", 2e-3, count=3),  # the fastest library here
    _row("a", "tvm-tuned", "NCHW", 1e-3, variant="structured", count=3),
    _row("a", "tvm-tuned", "NCHW", 0.5e-3, variant="structured-blocked", count=3),  # not counted
    _row("a", "tvm-tuned", "NHWC", 1.25e-3, variant="structured", count=3),
    _row("b", "torch", "NCHW", 1e-3, kind="depthwise"),
    _row("b", "onnxruntime", "NCHW", 0.1e-3, kind="depthwise", check="failed"),  # never counts
    _row("b", "tvm", "NCHW", 2e-3, kind="depthwise"),
    _row("c", "torch", "NCHW", 1e-3, part_of="block1"),  # alone: not in the network total
    _row("c", "tvm", "NCHW", 1e-3, part_of="block1"),
])


def test_the_library_side_is_the_fastest_of_every_library_backend():
    table = speedups.per_layer(ROWS).set_index("layer")
    a = table.loc["a"]
    assert a["best library"] == "onnxruntime NCHW" and a["best library s"] == 2e-3
    assert a["best tvm"] == "tvm-tuned structured NCHW" and a["best vs best"] == pytest.approx(2.0)
    assert a["like for like NHWC"] == pytest.approx(2.5 / 1.25)  # torch-frozen vs TVM, NHWC
    assert a["like for like NCHW"] == pytest.approx(2.0)
    assert a["tvm blocked s"] == 0.5e-3 and a["count"] == 3
    b = table.loc["b"]
    assert b["best library"] == "torch NCHW" and b["best vs best"] == pytest.approx(0.5)
    assert math.isnan(b["like for like NHWC"])


def test_suite_totals_weigh_each_layer_by_its_count_without_layers_measured_alone():
    totals = speedups.network_totals(speedups.per_layer(ROWS))
    assert totals["library_s"] == pytest.approx(3 * 2e-3 + 1e-3)
    assert totals["tvm_s"] == pytest.approx(3 * 1e-3 + 2e-3)
    assert totals["ratio"] == pytest.approx(7 / 5) and totals["convs"] == 4
    assert (totals["layers"], totals["of"]) == (2, 2)


def test_a_run_without_both_sides_has_no_table():
    only_torch = ROWS[ROWS["backend"].str.startswith("torch")]
    assert speedups.per_layer(only_torch).empty and speedups.network_totals(pd.DataFrame()) == {}
