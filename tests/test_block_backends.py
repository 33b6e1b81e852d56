"""Blocks (and single convs) on the whole-graph backends: onnxruntime, TVM Relax untuned and tuned.
Every block kind passes the verifier on each (torch: tests/test_blocks.py); single convs match
the exact check bit for bit; a tiny tune_relax run (2 trials per task of a separable block, about
a minute on 2 cores) writes a tuning database that a second build and a `pwbench run` reuse."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from pwbench import backends, targets
from pwbench.backends.base import NoEvents, Options, Unsupported
from pwbench.errors import UserError
from pwbench.measure import verify
from pwbench.workloads.blocks import Block
from pwbench.workloads.spec import ConvSpec
from test_blocks import BLOCKS

HAVE_ORT = all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx", "torch"))
HAVE_RELAX = all(importlib.util.find_spec(m) for m in ("tvm", "onnx", "torch"))
pytestmark = pytest.mark.cpu
TRIALS = 2

CONVS = {
    "full": ConvSpec(1, 6, 8, 7, 7, 3, 1, 1),
    "strided_depthwise": ConvSpec(1, 8, 8, 9, 9, 3, 2, 1, groups=8),
    "pointwise_batch2": ConvSpec(2, 8, 16, 6, 6),
    "asymmetric_kernel": ConvSpec(1, 6, 8, 9, 8, (1, 7), 1, (0, 3)),
}
WHOLE_GRAPH = [pytest.param("onnxruntime", marks=pytest.mark.skipif(not HAVE_ORT, reason="needs onnxruntime")),
               pytest.param("tvm-relax", marks=pytest.mark.skipif(not HAVE_RELAX, reason="needs tvm"))]


def backend(name, tmp_path, **tuning):
    from pwbench.backends.tuning_options import TuningOptions

    target = targets.resolve("cpu")
    cls = backends.backend_class(name, target)
    extra = {TuningOptions.group: TuningOptions(**tuning)} if tuning else {}
    return cls(target, Options(threads=2, work_dir=tmp_path, extra=extra), NoEvents())


@pytest.mark.parametrize("name", WHOLE_GRAPH)
@pytest.mark.parametrize("block", list(BLOCKS))
def test_every_block_kind_passes_verification(name, block, tmp_path):
    workload = BLOCKS[block]
    check = verify.check(backend(name, tmp_path).build(workload).make(), workload)
    assert check.verdict == "passed", check.detail
    assert check.max_rel_err < 1e-5


@pytest.mark.parametrize("name", WHOLE_GRAPH)
@pytest.mark.parametrize("conv", list(CONVS))
def test_single_convs_match_the_exact_reference_bit_for_bit(name, conv, tmp_path):
    """Their weight is loaded like the input (onnxruntime: into the graph, a new session)."""
    spec = CONVS[conv]
    kernel = backend(name, tmp_path).build(spec).make()
    check = verify.check(kernel, spec)
    assert check.verdict == "passed", check.detail
    assert kernel.result().shape == spec.output_shape


@pytest.mark.parametrize("name", WHOLE_GRAPH)
def test_nhwc_and_fp16_workloads_are_skipped_with_the_reason(name, tmp_path):
    be = backend(name, tmp_path)
    with pytest.raises(Unsupported, match="ONNX graphs, which are NCHW"):
        be.build(BLOCKS["separable"].replace(layout="NHWC"))
    with pytest.raises(Unsupported, match="float32 exports; this workload is float16"):
        be.build(CONVS["full"].replace(dtype="float16"))


@pytest.mark.parametrize("name", WHOLE_GRAPH)
def test_a_wrong_kernel_fails_its_check(name, tmp_path):
    """The verifier sees these backends' outputs: a block built with another seed's weights is
    a wrong kernel for this block."""
    block = BLOCKS["inverted_residual"]
    kernel = backend(name, tmp_path).build(block.replace(seed=1)).make()
    assert verify.check(kernel, block).verdict == "failed"


@pytest.mark.skipif(not HAVE_RELAX, reason="needs tvm")
def test_a_relax_library_runs_in_a_runtime_only_worker(tmp_path):
    """What a measuring process does: TVM_USE_RUNTIME_LIB=1, the Relax VM of libtvm_runtime;
    neither the 253 MB compiler library nor tvm.relax is loaded."""
    import pickle

    block = BLOCKS["separable"]
    built = backend("tvm-relax", tmp_path).build(block)
    (tmp_path / "make.pkl").write_bytes(pickle.dumps(built.make))
    code = textwrap.dedent(f"""
        import os, pickle, sys
        os.environ.update({built.runtime_env!r})
        from pwbench.measure import verify
        from pwbench.workloads.blocks import Block
        kernel = pickle.loads(open({str(tmp_path / "make.pkl")!r}, "rb").read())()
        check = verify.check(kernel, {block!r})
        maps = open("/proc/self/maps").read()
        print(check.verdict, "libtvm_compiler" in maps, "libtvm_runtime" in maps,
              "tvm.relax" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["passed", "False", "True", "False"]


# ---- tuning through Relax --------------------------------------------------------------------

SUITE = """[suite]
description = "tiny block tuning test"
[[block]]
name = "sep"
kind = "separable"
in_channels = 8
out_channels = 16
size = 8
layers = false
"""


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One tiny tuning of a separable block (2 tasks, TRIALS each), then a second build from the
    same tuning directory."""
    if not HAVE_RELAX:
        pytest.skip("needs tvm")
    tmp = tmp_path_factory.mktemp("relax_tuning")
    block = Block("separable", 1, 8, 16, 8, 8, name="sep")
    first = backend("tvm-relax-tuned", tmp / "w1", trials=TRIALS, tuning_dir=tmp / "db").build(block)
    (database,) = (tmp / "db").iterdir()
    records = (database / "database_tuning_record.json").read_text()
    second = backend("tvm-relax-tuned", tmp / "w2", trials=TRIALS, tuning_dir=tmp / "db").build(block)
    return {"tmp": tmp, "db": database, "block": block, "first": first, "second": second,
            "records": records}


def test_tune_relax_writes_a_database_of_the_same_kind_as_layers(tuned):
    first, db = tuned["first"], tuned["db"]
    assert first.columns["tuning"] == "tuned" and first.columns["tuning_trials"] == TRIALS
    assert first.columns["tuning_tasks"] == 2 and first.columns["tuned_primfuncs"] == "2/2"
    layers = json.loads((db / "layers.json").read_text())
    # per task; keyed apart from a TOPI layer's record (the same conv is another PrimFunc there)
    assert list(layers) == [f"relax:{tuned['block'].id}@structured"]
    assert layers[list(layers)[0]]["trials"] == TRIALS
    # each conv in the structured space, its ReLU computed where the output is stored
    assert first.columns["space"] == "structured"
    assert "fused_pwbench_structured_conv0_relu" in first.notes[0]
    stored = json.loads((db / "fingerprint.json").read_text())
    assert stored["target_string"] == first.columns["target_string"]
    assert len(tuned["records"].splitlines()) == 2 * TRIALS  # every measured candidate
    assert first.curve and all(r["layer"] == "sep" for r in first.curve)
    assert "2 of 2 PrimFuncs scheduled" in first.notes[0]


def test_a_second_build_reuses_the_database_without_tuning(tuned):
    second = tuned["second"]
    assert second.columns["tuning"] == "database" and second.columns["tuned_primfuncs"] == "2/2"
    assert (tuned["db"] / "database_tuning_record.json").read_text() == tuned["records"]
    check = verify.check(second.make(), tuned["block"])
    assert check.verdict == "passed", check.detail


@pytest.mark.cli
def test_a_run_measures_the_tuned_block_from_the_database(tuned, pwbench):
    tmp = tuned["tmp"]
    (tmp / "sep.toml").write_text(SUITE)
    proc = pwbench("run", "--suite", tmp / "sep.toml", "--backend", "tvm-relax-tuned", "--threads", "2",
                   "--trials", TRIALS, "--tuning-dir", tmp / "db", "--processes", "1",
                   "--warmup-ms", "5", "--sample-ms", "20", "--output", tmp / "run")
    assert proc.returncode == 0, proc.stderr
    assert "sep NCHW [tvm-relax-tuned]: 2 task(s)" in proc.stdout and "from the tuning database" in proc.stdout
    row = pd.read_parquet(tmp / "run" / "records.parquet").iloc[0]
    assert (row["check"], row["tuning"], row["kind"]) == ("passed", "database", "separable")
    assert row["median_s"] > 0


@pytest.mark.cli
def test_tune_takes_blocks_through_relax_and_says_tvm_tuned_does_not(tuned, capsys, monkeypatch):
    from pwbench import cli

    for var in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "MKL_NUM_THREADS"):  # tune sets them
        monkeypatch.setenv(var, "2")
    tmp = tuned["tmp"]
    (tmp / "sep_tune.toml").write_text(SUITE)
    common = ["--suite", str(tmp / "sep_tune.toml"), "--threads", "2", "--trials", str(TRIALS),
              "--tuning-dir", str(tmp / "db")]
    assert cli.main(["tune", "--backend", "tvm-relax-tuned", *common]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("│ sep "))
    assert row.rstrip(" │").endswith("database"), out  # tuned by the fixture already
    assert cli.main(["tune", *common]) == 0
    out = capsys.readouterr().out
    assert "not tuned: tvm-tuned tunes single convs" in out


def test_a_missing_onnxruntime_disables_only_that_backend_and_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    assert backends.unavailable_reason("onnxruntime") == \
        "needs onnxruntime: pip install -e '.[models]'"
    assert backends.unavailable_reason("torch") is None
    with pytest.raises(UserError, match="backend onnxruntime is unavailable"):
        backends.backend_class("onnxruntime", targets.resolve("cpu"))
    with pytest.raises(UserError, match="backend tvm-relax does not run on target arm"):
        backends.backend_class("tvm-relax", targets.resolve("arm"))
