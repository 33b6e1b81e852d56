"""The structured design spaces (pwbench/tvm_bridge/spaces) at every vector width, whatever this
machine is: 4 fp32 lanes (an aarch64 NEON core), 8 (an AVX2 CPU, `haswell`) and 16 (an AVX-512
CPU, `skylake-avx512`). What they claim (every float32 conv of the four network suites that is
neither grouped nor dilated, in NCHW and NHWC), that every task has a register tile that fits,
and every structure's numerics (exact inputs bit for bit, random within the bound): compiled for
each width, run here where this CPU executes that ISA (AVX2 code runs on every AVX-512 machine),
on the emulated aarch64 board (qemu) for NEON, compiled only otherwise. Then the knobs
MetaSchedule draws and one suite-wide tuning run of a handful of trials in which every kind the
space claims passes its checks in every layout, and a dilated and a grouped layer fall back to
the default space, recorded."""

from __future__ import annotations

import importlib.util
import itertools
import uuid

import pandas as pd
import pytest

from pwbench import cli
from pwbench.measure import verify
from pwbench.workloads import suites
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
    "width_17": ConvSpec(1, 16, 24, 17, 17, 3, 1, 1),  # a prime width: a tail tile
    "prime_channels": ConvSpec(1, 7, 97, 5, 5, 3, 1, 1),  # 97 outputs: padded channel blocks
    "depthwise_prime": ConvSpec(1, 67, 67, 9, 9, 3, 2, 1, groups=67),
    "batch2": ConvSpec(2, 16, 16, 6, 6, 3, 1, 1),
    "asymmetric": ConvSpec(1, 8, 8, 7, 7, (1, 3), 1, (0, 1)),
    "rgb_7x7": ConvSpec(1, 3, 16, 20, 20, 7, 2, 3),  # 3 input channels: one block of 3
    "width_1": ConvSpec(1, 20, 6, 1, 1),  # a squeeze-and-excitation conv
}
WIDTHS = {  # name: (TVM target, fp32 lanes, accumulators)
    "neon": ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "neoverse-n1",
              "mattr": ["+neon"]}, 4, 28),
    "avx2": ({"kind": "llvm", "mcpu": "haswell"}, 8, 14),
    "avx512": ({"kind": "llvm", "mcpu": "skylake-avx512"}, 16, 28),
}
NETWORKS = ("resnet50", "mobilenetv2", "efficientnet_b0", "inception_v3")


@pytest.mark.parametrize("target, lanes, accumulators", [
    ({"kind": "llvm", "mcpu": "haswell"}, 8, 14), ({"kind": "llvm", "mcpu": "znver3"}, 8, 14),
    ({"kind": "llvm", "mcpu": "znver5"}, 16, 28), (WIDTHS["avx512"][0], 16, 28),
    ({"kind": "llvm", "mcpu": "znver5", "mattr": ["-avx512f"]}, 8, 14),
    (WIDTHS["neon"][0], 4, 28)])
def test_vector_unit_is_read_from_the_target(target, lanes, accumulators):
    from pwbench.tvm_bridge import tvm_targets

    assert tvm_targets.vector_unit(target) == (lanes, accumulators)


@pytest.mark.parametrize("width", list(WIDTHS))
def test_every_plain_float32_conv_of_the_networks_is_claimed_with_tiles_that_fit(width):
    """At every width, every layer of ResNet-50, MobileNetV2, EfficientNet-B0 and Inception-v3 in
    NCHW and NHWC that is neither grouped nor dilated gets tasks, and every task a register tile
    within the accumulators, with blocks that tile its channels (padded where they do not)."""
    from pwbench.tvm_bridge import spaces

    target, lanes, accumulators = WIDTHS[width]
    for name in NETWORKS:
        for spec in suites.load(name, layout="NCHW,NHWC").layers:
            tasks = spaces.tasks(spec, target)
            plain = spec.kind in ("pointwise", "full", "depthwise") and spec.dilation == (1, 1)
            assert bool(tasks) == plain, (name, spec.label, spaces.unclaimed(spec))
            for t in tasks:
                vectors = -(-t.oc_bn // lanes)
                assert t.reg_choices and vectors <= 4, (spec.label, t)
                assert all(r * vectors <= accumulators for r in t.reg_choices), (spec.label, t)
                assert t.ic_padded % t.ic_bn == 0 and t.oc_padded % t.oc_bn == 0
                assert 0 <= t.oc_padded - spec.out_channels < t.oc_bn


def test_blocks_follow_the_vector_width():
    from pwbench.tvm_bridge import spaces

    spec = ConvSpec(1, 64, 64, 14, 14, 3, 1, 1)
    for width, lanes in (("avx512", 16), ("avx2", 8), ("neon", 4)):
        tasks = spaces.tasks(spec, WIDTHS[width][0])
        assert {(t.ic_bn, t.oc_bn) for t in tasks} == {(a, b) for a in (lanes, 2 * lanes)
                                                       for b in (lanes, 2 * lanes)}
    odd = spaces.tasks(CLAIMED["odd_channels"], WIDTHS["avx512"][0])
    assert [(t.ic_bn, t.oc_bn, t.oc_padded) for t in odd] == [(12, 20, 20)]
    (prime,) = spaces.tasks(CLAIMED["prime_channels"], WIDTHS["avx2"][0])
    assert (prime.oc_bn, prime.oc_padded) == (8, 104)  # 97 channels in 13 blocks of 8


@pytest.mark.parametrize("width, vectors, accumulators, widths", [
    (17, 1, 28, [17, 9, 6, 5]),  # 17 in one tile, or 9 + a tail of 8, 6 + 6 + 5, ...
    (17, 2, 14, [6, 5, 4]),  # two vectors per column at 8 lanes: at most 7 columns
    (149, 1, 28, [25, 22, 19, 17]),  # Inception-v3's stem: balanced tiles, no divisor needed
    (56, 1, 16, [14, 12, 10, 8, 7, 4]), (7, 3, 14, [4]), (1, 1, 28, [1])])
def test_tiles_need_not_divide_the_width(width, vectors, accumulators, widths):
    from pwbench.tvm_bridge.spaces import choices

    assert choices.tiles(width, vectors, accumulators, 4) == widths


@pytest.mark.parametrize("spec, reason", [
    (ConvSpec(1, 8, 8, 9, 9, 3, 1, 2, 2), "dilated"),
    (ConvSpec(1, 8, 12, 7, 7, 3, 1, 1, groups=2), "grouped"),
    (ConvSpec(1, 4, 8, 7, 7, 3, 1, 1, groups=4), "channel multiplier"),
    (ConvSpec(1, 8, 8, 7, 7, dtype="float16"), "float16"),
])
def test_what_the_space_does_not_claim_falls_back_with_a_reason(spec, reason):
    from pwbench.tvm_bridge import spaces

    target = WIDTHS["avx512"][0]
    plan = spaces.plan(spec, target, "structured")
    assert plan.space == "default" and reason in plan.reason and not plan.tasks
    assert spaces.plan(CLAIMED["full"], target, "structured").space == "structured"
    assert spaces.plan(CLAIMED["full"], target, "default") == spaces.Plan("default")


def _host_runs(width: str) -> str | None:
    """Why this machine cannot run code of that width (None: it can)."""
    from pwbench.targets.host import cpu_facts

    flags = cpu_facts()["cpu_flags"]
    needs = {"avx2": ("avx2", "fma"), "avx512": ("avx512f",)}.get(width, ("aarch64",))
    if cpu_facts()["machine"] != "x86_64" or not all(f in flags for f in needs):
        return f"this CPU does not execute {width} code"
    return None


def _kernels(width: str, tmp_path):
    """(spec, task, structure, artifact) for every structure of each layer's last task, at its
    widest tile, in every layout, compiled for the width."""
    import tvm

    from pwbench.tvm_bridge import spaces, toolchains
    from pwbench.tvm_bridge.kernel import Artifact

    target = dict(WIDTHS[width][0], **{"num-cores": 1})
    cross = "aarch64-linux-gnu-gcc" if width == "neon" else None
    chain = toolchains.Board(target, 1, None, cross)
    for (name, spec), layout in itertools.product(CLAIMED.items(), ("NCHW", "NHWC", "NCHWc")):
        task = spaces.tasks(spec, target, layout)[-1]
        for structure in task.structures:
            schedule = spaces.fixed(task, structure, task.reg_choices[0])
            assert spaces.knobs(schedule) == (structure, task.reg_choices[0])
            executable = tvm.compile(schedule.mod, target=tvm.target.Target(target))
            library = chain.export(executable, tmp_path / f"{name}_{uuid.uuid4().hex[:8]}.so")
            yield spec, task, structure, Artifact(spec, str(library), task.packing)


@pytest.mark.parametrize("width", ["avx2", "avx512"])
def test_every_structure_matches_the_reference_exactly_at_x86_widths(width, tmp_path):
    """Run here where this CPU executes the ISA, compiled only (every structure) where not."""
    from pwbench.tvm_bridge import runtime

    why = _host_runs(width)
    failures = []
    for spec, task, structure, artifact in _kernels(width, tmp_path):
        if why:
            continue
        check = verify.check(runtime.load(artifact, 1), spec)
        if check.verdict != "passed":
            failures.append((spec.label, task.layout, structure.text, check.detail))
    assert not failures, failures
    if why:
        pytest.skip(f"compiled every structure for {width}; {why}, so none ran")


@pytest.mark.cross
def test_every_structure_matches_the_reference_exactly_on_the_emulated_neon_board(emulated, tmp_path):
    """NEON kernels, cross-compiled here, uploaded to the emulated aarch64 board and checked
    there through the same artifact loader as every board kernel."""
    from pwbench.targets import local_fleet
    from pwbench.targets.board import Endpoint
    from pwbench.tvm_bridge import board, rpc

    endpoint = Endpoint("127.0.0.1", emulated["port"], local_fleet.AARCH64_KEY)
    failures = []
    for spec, task, structure, artifact in _kernels("neon", tmp_path):
        def check(artifact=artifact, spec=spec):
            kernel = board.load(artifact, 1, endpoint)
            try:
                return verify.check(kernel, spec)
            finally:
                kernel.close()

        result = rpc.bounded(check, 120, f"checking {spec.label} on the emulated board")
        if result.verdict != "passed":
            failures.append((spec.label, task.layout, structure.text, result.detail))
    assert not failures, failures


def test_the_mutator_changes_the_tile_and_the_replay_follows():
    """MetaSchedule replays traces: a mutated sample_categorical decision must change the split
    factor of the replayed schedule (not only the recorded number)."""
    import tvm

    from pwbench.tvm_bridge import metaschedule, spaces

    ms = metaschedule.meta_schedule()
    task = spaces.tasks(ConvSpec(1, 16, 16, 12, 12, 3, 1, 1), WIDTHS["avx512"][0])[0]
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

    from pwbench.tvm_bridge import search, spaces

    task = spaces.tasks(CLAIMED["full"], WIDTHS["avx512"][0])[0]
    mod = tvm.IRModule({"main": task.func()})
    points = [p for d in spaces.space_fn(task)(tvm.s_tir.Schedule(mod))
              for p in search._points(mod, d.trace)]
    assert len(points) == len(task.structures) * len(task.reg_choices)
    assert len({search._key(p) for p in points}) == len(points)


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
size = 17
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
STRUCTURED = ["pw", "full_s2", "dw", "odd"]


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    """One suite-wide tuning run for an AVX2 CPU (`haswell`: every x86-64 CI machine runs it),
    2 trials per layer, both layouts, every kernel verified."""
    tmp = tmp_path_factory.mktemp("spaces")
    (tmp / "suite.toml").write_text(SUITE)
    mp = pytest.MonkeyPatch()
    for var in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "MKL_NUM_THREADS"):
        mp.setenv(var, "2")
    code = cli.main(["run", "--suite", str(tmp / "suite.toml"), "--backend", "tvm-tuned",
                     "--target", '{"kind": "llvm", "mcpu": "haswell"}',
                     "--threads", "2", "--trials", "2", "--tuning-dir", str(tmp / "db"),
                     "--output", str(tmp / "run"), "--warmup-ms", "2", "--sample-ms", "10",
                     "--processes", "1"])
    mp.undo()
    return code, pd.read_parquet(tmp / "run" / "records.parquet")


def test_a_tuned_run_verifies_every_claimed_kind_in_every_layout(tuned_run):
    code, rows = tuned_run
    assert code == 0 and (rows["check"] == "passed").all(), rows[["layer", "variant", "error"]]
    claimed = rows[rows["layer"].isin(STRUCTURED)]
    kernels = set(zip(claimed["layer"], claimed["layout"], claimed["variant"]))
    for layer in STRUCTURED:
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


@pytest.mark.parametrize("width", list(WIDTHS))
def test_no_structure_vectorises_more_than_a_channel_block(width):
    """A loop vectorised over a whole channel range (1024 lanes in an NHWC unpack stage) took
    LLVM 75 s to compile per candidate: every vectorised loop stays within one block."""
    import re

    from pwbench.tvm_bridge import spaces

    target, lanes, _ = WIDTHS[width]
    for spec in (ConvSpec(1, 256, 1024, 14, 14, layout="NHWC"), ConvSpec(1, 7, 97, 5, 5, 3, 1, 1),
                 ConvSpec(1, 7, 97, 5, 5, 3, 1, 1, layout="NHWC")):
        for task in spaces.tasks(spec, target):
            for structure in task.structures:
                text = spaces.fixed(task, structure, task.reg_choices[0]).mod.script()
                widest = max(int(v) for v in re.findall(r"T\.vectorized\((\d+)\)", text))
                assert widest <= max(task.ic_bn, task.oc_bn, task.reg_choices[0], lanes), \
                    (spec, structure)
