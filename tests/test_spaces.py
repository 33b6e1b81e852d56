"""The structured design space (pwbench/tvm_bridge/spaces.py): vector widths come from the target,
the layers it claims and the reasons it gives for the others, every structure's numerics in
NCHW, NHWC and blocked layouts (exact inputs bit for bit), the knobs MetaSchedule draws, and one
suite-wide tuning run of a handful of trials in which every kind it claims passes its checks in
every layout, and a dilated and a grouped layer fall back to the default space, recorded."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from pwbench import cli
from pwbench.measure import verify
from pwbench.workloads.spec import ConvSpec

HAVE_TVM = importlib.util.find_spec("tvm") is not None
pytestmark = [pytest.mark.cpu, pytest.mark.tvm,
              pytest.mark.skipif(not HAVE_TVM, reason="apache-tvm is not installed")]

CLAIMED = {
    "pointwise": ConvSpec(1, 32, 48, 7, 7),
    "full": ConvSpec(1, 16, 32, 8, 8, 3, 1, 1),
    "strided": ConvSpec(1, 8, 16, 9, 9, 3, 2, 1),
    "depthwise": ConvSpec(1, 32, 32, 8, 8, 3, 1, 1, groups=32),
    "odd_channels": ConvSpec(1, 12, 20, 7, 7, 3, 1, 1),  # neither a multiple of 8 nor of 16
    "batch2": ConvSpec(2, 16, 16, 6, 6, 3, 1, 1),
    "batch2_depthwise_strided": ConvSpec(2, 24, 24, 9, 9, 3, 2, 1, groups=24),
    "asymmetric": ConvSpec(1, 8, 8, 7, 7, (1, 3), 1, (0, 1)),
    "rgb_7x7": ConvSpec(1, 3, 16, 20, 20, 7, 2, 3),  # 3 input channels: one block of 3
}
AVX512 = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}


def _host():
    from pwbench import targets

    return targets.resolve("cpu").tvm_target(2)


@pytest.mark.parametrize("target, lanes, accumulators", [
    ({"kind": "llvm", "mcpu": "haswell"}, 8, 14), ({"kind": "llvm", "mcpu": "znver3"}, 8, 14),
    ({"kind": "llvm", "mcpu": "znver5"}, 16, 28), (AVX512, 16, 28),
    ({"kind": "llvm", "mcpu": "znver5", "mattr": ["-avx512f"]}, 8, 14),
    ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, 4, 28)])
def test_vector_unit_is_read_from_the_target(target, lanes, accumulators):
    from pwbench.tvm_bridge import spaces

    assert spaces.vector_unit(target) == (lanes, accumulators)


def test_blocks_follow_the_vector_width():
    from pwbench.tvm_bridge import spaces

    spec = ConvSpec(1, 64, 64, 14, 14, 3, 1, 1)
    for target, lanes in ((AVX512, 16), ({"kind": "llvm", "mcpu": "haswell"}, 8)):
        tasks = spaces.tasks(spec, target)
        assert {(t.ic_bn, t.oc_bn) for t in tasks} == {(a, b) for a in (lanes, 2 * lanes)
                                                       for b in (lanes, 2 * lanes)}
        for t in tasks:  # the register tile fits the accumulator registers
            assert all(r * -(-t.oc_bn // lanes) <= t.accumulators for r in t.reg_choices)
    odd = spaces.tasks(CLAIMED["odd_channels"], AVX512)
    assert [(t.ic_bn, t.oc_bn) for t in odd] == [(12, 20)]


@pytest.mark.parametrize("spec, reason", [
    (ConvSpec(1, 8, 8, 9, 9, 3, 1, 2, 2), "dilated"),
    (ConvSpec(1, 8, 12, 7, 7, 3, 1, 1, groups=2), "grouped"),
    (ConvSpec(1, 4, 8, 7, 7, 3, 1, 1, groups=4), "channel multiplier"),
    (ConvSpec(1, 8, 8, 7, 7, dtype="float16"), "float16"),
    (ConvSpec(1, 8, 8, 37, 37), "output width 37"),
    (ConvSpec(1, 8, 97, 7, 7), "97 channels"),
])
def test_what_the_space_does_not_claim_falls_back_with_a_reason(spec, reason):
    from pwbench.tvm_bridge import spaces

    plan = spaces.plan(spec, AVX512, "structured")
    assert plan.space == "default" and reason in plan.reason and not plan.tasks
    assert spaces.plan(CLAIMED["full"], AVX512, "structured").space == "structured"
    assert spaces.plan(CLAIMED["full"], AVX512, "default") == spaces.Plan("default")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NCHWc"])
@pytest.mark.parametrize("name", list(CLAIMED))
def test_every_structure_matches_the_reference_exactly(name, layout):
    """Every design space of the layer's last task, at its widest tile, compiled for this CPU and
    checked as every timed kernel is (exact inputs bit for bit, random inputs within the bound)."""
    import tvm

    from pwbench.tvm_bridge import layouts, runtime, spaces

    spec, target = CLAIMED[name], _host()
    task = spaces.tasks(spec, target, layout)[-1]
    for structure in task.structures:
        schedule = spaces.fixed(task, structure, task.reg_choices[-1])
        kernel = runtime.PackedConv(spec, tvm.compile(schedule.mod, target=tvm.target.Target(target))["main"],
                                    tvm.cpu(0), layouts.Packing(layout, task.ic_bn, task.oc_bn))
        check = verify.check(kernel, spec)
        assert check.verdict == "passed", (structure, check.detail)
        assert spaces.knobs(schedule) == (structure, task.reg_choices[-1])


def test_the_mutator_changes_the_tile_and_the_replay_follows():
    """MetaSchedule replays traces: a mutated sample_categorical decision must change the split
    factor of the replayed schedule (not only the recorded number)."""
    import tvm

    from pwbench.tvm_bridge import compiler, spaces

    ms = compiler.meta_schedule()
    task = spaces.tasks(ConvSpec(1, 16, 16, 12, 12, 3, 1, 1), AVX512)[0]
    assert len(task.reg_choices) > 1
    (design, *_) = spaces.space_fn(task)(tvm.s_tir.Schedule(task.func()))
    before = spaces.knobs(design)[1]
    mutated = spaces.mutate_categorical(ms, seed=1).apply(design.trace)
    replayed = tvm.s_tir.Schedule(task.func())
    mutated.apply_to_schedule(replayed, remove_postproc=True)
    after = spaces.knobs(replayed)[1]
    assert after != before and after in task.reg_choices
    loops = replayed.get_loops(replayed.get_sblock("conv_init"))  # the tile: reg_n x oc_bn
    assert after in [int(replayed.get(lp).extent) for lp in loops]


def test_enumeration_covers_the_space_once():
    import tvm

    from pwbench.tvm_bridge import spaces, tuning

    task = spaces.tasks(CLAIMED["full"], AVX512)[0]
    mod = tvm.IRModule({"main": task.func()})
    points = [p for d in spaces.space_fn(task)(tvm.s_tir.Schedule(mod)) for p in tuning._points(mod, d.trace)]
    assert len(points) == len(task.structures) * len(task.reg_choices)
    assert len({tuning._key(p) for p in points}) == len(points)


SUITE = """[suite]
description = "structured space test"
layout = ["NCHW", "NHWC"]
[[layer]]
name = "pw"
in_channels = 32
out_channels = 48
size = 7
[[layer]]
name = "full_s2"
in_channels = 8
out_channels = 16
size = 9
kernel_size = 3
stride = 2
padding = 1
[[layer]]
name = "dw"
in_channels = 32
depthwise = true
size = 8
kernel_size = 3
padding = 1
[[layer]]
name = "odd"
in_channels = 12
out_channels = 20
size = 7
kernel_size = 3
padding = 1
batch = 2
[[layer]]
name = "dilated"
in_channels = 8
out_channels = 8
size = 9
kernel_size = 3
padding = 2
dilation = 2
[[layer]]
name = "grouped"
in_channels = 8
out_channels = 12
size = 7
kernel_size = 3
padding = 1
groups = 2
"""


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    """One suite-wide tuning run, 2 trials per layer, both layouts, every kernel verified."""
    tmp = tmp_path_factory.mktemp("spaces")
    (tmp / "suite.toml").write_text(SUITE)
    mp = pytest.MonkeyPatch()
    for var in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "MKL_NUM_THREADS"):
        mp.setenv(var, "2")
    code = cli.main(["run", "--suite", str(tmp / "suite.toml"), "--backend", "tvm-tuned",
                     "--threads", "2", "--trials", "2", "--tuning-dir", str(tmp / "db"),
                     "--output", str(tmp / "run"), "--warmup-ms", "2", "--sample-ms", "10",
                     "--processes", "1"])
    mp.undo()
    return code, pd.read_parquet(tmp / "run" / "records.parquet")


def test_a_tuned_run_verifies_every_claimed_kind_in_every_layout(tuned_run):
    code, rows = tuned_run
    assert code == 0 and (rows["check"] == "passed").all(), rows[["layer", "variant", "error"]]
    claimed = rows[rows["layer"].isin(["pw", "full_s2", "dw", "odd"])]
    kernels = set(zip(claimed["layer"], claimed["layout"], claimed["variant"]))
    for layer in ("pw", "full_s2", "dw", "odd"):
        assert {(layer, "NCHW", "structured"), (layer, "NHWC", "structured"),
                (layer, "NCHW", "structured-blocked")} <= kernels
    assert set(claimed["space"]) == {"structured"} and claimed["tuning_trials"].between(1, 4).all()
    assert set(claimed["tuning"]) == {"tuned"} and set(claimed["tuning_mode"]) == {"suite"}
    blocked = claimed[claimed["variant"] == "structured-blocked"]
    assert set(blocked["tvm_layout"]) == {"NCHWc"} and blocked["knobs"].str.contains("reg_n=").all()


def test_dilated_and_grouped_layers_fall_back_to_the_default_space_recorded(tuned_run):
    _, rows = tuned_run
    for layer, reason in (("dilated", "dilated"), ("grouped", "grouped")):
        mine = rows[rows["layer"] == layer]
        assert len(mine) == 2 and set(mine["variant"]) == {"default"}  # NCHW and NHWC, no blocked
        assert set(mine["space"]) == {"default"} and mine["space_note"].str.contains(reason).all()
