"""The suite files in suites/ and the TOML loader in pwbench/workloads/suites.py.

The network suites are checked against the published sizes of the torchvision models: the conv
weights (ConvSpec.params) plus the parameters the suite does not model (BatchNorm after every conv,
the SE convs' biases, the classifier) must add up to the exact published parameter count, and the
conv MACs plus the classifier's to the published GMACs ("_ops" in torchvision's weight metadata).
"""

from __future__ import annotations

import re
import textwrap
from collections import defaultdict
from fractions import Fraction

import pytest

from pwbench.workloads import suites
from pwbench.errors import UserError

pytestmark = pytest.mark.unit

NETWORKS = ("resnet50", "mobilenetv2", "efficientnet_b0", "inception_v3")

# torchvision EfficientNet names its squeeze-excitation convs features.S.B.block.K.fc1 / .fc2.
_SE = re.compile(r"\.block\.\d+\.fc[12]$")


def _is_se(spec) -> bool:
    return bool(_SE.search(spec.name))


def _load(name):
    return suites.load(name)


# ---- network suites ---------------------------------------------------------------------------

# (suite, classifier in_features, published parameter count, published GMACs)
PUBLISHED = [
    ("resnet50", 2048, 25_557_032, 4.089),
    ("mobilenetv2", 1280, 3_504_872, 0.301),
    ("efficientnet_b0", 1280, 5_288_548, 0.386),
    ("inception_v3", 2048, 23_834_568, 5.713),  # 27,161,264 minus the AuxLogits branch
]


@pytest.mark.parametrize("name, fc_in, params, _gmacs", PUBLISHED)
def test_network_param_total_matches_published(name, fc_in, params, _gmacs):
    total = fc_in * 1000 + 1000  # classifier Linear(fc_in, 1000) weight + bias
    for spec in _load(name).layers:
        # Every conv is followed by a BatchNorm2d (weight + bias = 2 * out_channels), except the
        # EfficientNet SE convs, which have no norm but a bias (out_channels).
        extra = spec.out_channels if _is_se(spec) else 2 * spec.out_channels
        total += spec.count * (spec.params + extra)
    assert total == params


@pytest.mark.parametrize("name, fc_in, _params, gmacs", PUBLISHED)
def test_network_macs_match_published(name, fc_in, _params, gmacs):
    # The MACs depend on every layer's spatial size and stride, which the parameter count does not
    # see; torchvision's "_ops" count convs and the classifier at the standard input size.
    macs = sum(s.count * s.macs for s in _load(name).layers) + fc_in * 1000
    assert round(macs / 1e9, 3) == gmacs


# efficientnet_b0: stem 1 + head 1 + features.1.0 (expand ratio 1: depthwise, SE fc1, SE fc2,
# project = 4) + 15 more MBConv blocks (2 + 2 + 3 + 3 + 4 + 1 in stages 2..7) x 5 (expand,
# depthwise, fc1, fc2, project) = 1 + 1 + 4 + 75 = 81.
EFFICIENTNET_B0_CONVS = 1 + 1 + 4 + (2 + 2 + 3 + 3 + 4 + 1) * 5


@pytest.mark.parametrize("name, convs", [
    ("resnet50", 53),  # stem 1 + 16 bottlenecks x 3 + 4 downsample
    ("mobilenetv2", 52),  # stem 1 + features.1: 2 + 16 blocks x 3 + final 1x1 1
    ("efficientnet_b0", EFFICIENTNET_B0_CONVS),
    ("inception_v3", 94),  # stem 5 + 3 x 7 (A) + 4 (B) + 4 x 10 (C) + 6 (D) + 2 x 9 (E)
])
def test_network_conv_counts(name, convs):
    assert sum(s.count for s in _load(name).layers) == convs


def test_efficientnet_b0_layer_breakdown():
    assert EFFICIENTNET_B0_CONVS == 81
    layers = _load("efficientnet_b0").layers
    count = defaultdict(int)
    for s in layers:
        count["se" if _is_se(s) else s.kind] += s.count
    assert count == {"se": 32, "depthwise": 16, "pointwise": 15 + 16 + 1, "full": 1}
    for s in layers:
        if _is_se(s):
            assert s.kind == "pointwise" and (s.height, s.width) == (1, 1)
        if s.kind == "depthwise":
            k = s.kernel_size[0]
            assert k in (3, 5) and s.padding == (k // 2, k // 2)
    strided = sorted(s.name for s in layers if s.stride == (2, 2))
    assert strided == ["features.0.0"] + [f"features.{n}.0.block.1.0" for n in (2, 3, 4, 6)]


def test_resnet50_is_v1_5_with_downsample():
    layers = {s.name: s for s in _load("resnet50").layers}
    for n in (2, 3, 4):
        assert layers[f"layer{n}.0.conv1"].stride == (1, 1)
        assert layers[f"layer{n}.0.conv2"].stride == (2, 2)
        assert layers[f"layer{n}.0.downsample.0"].stride == (2, 2)
    assert sum(1 for name in layers if "downsample" in name) == 4
    assert all(s.groups == 1 for s in layers.values())


def test_inception_v3_asymmetric_kernels():
    layers = _load("inception_v3").layers
    asym = [s for s in layers if s.kernel_size[0] != s.kernel_size[1]]
    kernels = defaultdict(int)
    for s in asym:
        kh, kw = s.kernel_size
        assert s.padding == (kh // 2, kw // 2)
        assert s.out_hw == (s.height, s.width)
        kernels[s.kernel_size] += s.count
    # Mixed_6b-e: 3 x (1,7) + 3 x (7,1) each; Mixed_7a: one of each; Mixed_7b-c: 2 x (1,3) + 2 x (3,1).
    assert kernels == {(1, 7): 13, (7, 1): 13, (1, 3): 4, (3, 1): 4}
    assert not any("AuxLogits" in s.name for s in layers)


def test_mobilenetv2_kinds():
    kinds = defaultdict(int)
    for s in _load("mobilenetv2").layers:
        kinds[s.kind] += s.count
    assert kinds == {"full": 1, "depthwise": 17, "pointwise": 16 + 17 + 1}


# ---- every builtin suite ----------------------------------------------------------------------

def test_builtin_suites_include_new_files():
    names = set(suites.builtin_suites())
    assert set(NETWORKS) | {"pointwise_grid", "depthwise_grid", "separable_vs_full"} <= names


@pytest.mark.parametrize("name", suites.builtin_suites())
def test_builtin_suite_loads_with_unique_names(name):
    suite = _load(name)
    assert suite.layers and suite.description
    names = [(s.name, s.layout) for s in suite.layers]  # a layer may come in several layouts
    assert all(n for n, _ in names), "every layer of a builtin suite has a name"
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)


def test_a_suite_lists_layouts_and_the_override_can_too(tmp_path):
    default = _load("default").layers
    assert [s.layout for s in default[:2]] == ["NCHW", "NHWC"] and default[0].name == default[1].name
    assert {s.layout for s in suites.load("default", layout="NHWC").layers} == {"NHWC"}
    both = suites.load("resnet50", layout="NCHW,NHWC").layers
    assert len(both) == 2 * len(_load("resnet50").layers)
    path = tmp_path / "own.toml"  # a layer's own layout beats the suite's list
    path.write_text('[suite]\nlayout = ["NCHW", "NHWC"]\n[[layer]]\nin_channels = 4\n'
                    'out_channels = 4\nsize = 4\nlayout = "NHWC"\n[[layer]]\nin_channels = 4\n'
                    'out_channels = 8\nsize = 4\n')
    assert [(s.out_channels, s.layout) for s in suites.load(str(path)).layers] == [
        (4, "NHWC"), (8, "NCHW"), (8, "NHWC")]
    path.write_text('[suite]\nlayout = ["NCHW", "NCWH"]\n[[layer]]\nin_channels = 4\n'
                    'out_channels = 4\nsize = 4\n')
    with pytest.raises(UserError, match="layout 'NCWH' is not one of"):
        suites.load(str(path))


def test_pointwise_grid():
    layers = _load("pointwise_grid").layers
    assert 60 <= len(layers) <= 100
    assert {s.kind for s in layers} == {"pointwise"}
    assert {s.height for s in layers} == {7, 14, 28, 56}
    assert len({s.id for s in layers}) == len(layers)


def test_depthwise_grid():
    layers = _load("depthwise_grid").layers
    assert 30 <= len(layers) <= 100
    assert {s.kind for s in layers} == {"depthwise"}
    assert {s.kernel_size for s in layers} == {(3, 3), (5, 5), (7, 7)}
    assert {s.stride for s in layers} == {(1, 1), (2, 2)}
    assert {s.in_channels for s in layers} == {32, 96, 144, 384, 960}
    assert len({s.id for s in layers}) == len(layers)
    for s in layers:
        k = s.kernel_size[0]
        assert s.padding == (k // 2, k // 2)
        assert s.out_hw == (-(-s.height // s.stride[0]),) * 2  # "half" padding: ceil(size / stride)


# ---- separable_vs_full ------------------------------------------------------------------------

def _pairs():
    pairs = defaultdict(lambda: {"factored": [], "full": []})
    for s in _load("separable_vs_full").layers:
        assert s.pair and s.side in ("factored", "full"), s.name
        pairs[s.pair][s.side].append(s)
    return pairs


def test_separable_vs_full_pairs_are_well_formed():
    pairs = _pairs()
    assert 8 <= len(pairs) <= 12
    for name, sides in pairs.items():
        assert len(sides["full"]) == 1, name
        assert len(sides["factored"]) >= 1, name
        full, factored = sides["full"][0], sides["factored"]
        # Same input, same output: the factored chain replaces the full conv.
        assert factored[0].input_shape == full.input_shape, name
        assert factored[-1].output_shape == full.output_shape, name
        for a, b in zip(factored, factored[1:]):
            assert a.output_shape == b.input_shape, name
        assert full.kind == "full"


def _ratio(sides, attr):
    return Fraction(sum(getattr(s, attr) for s in sides["factored"]),
                    sum(getattr(s, attr) for s in sides["full"]))


def _find(pairs, **shape):
    (sides,) = [sides for sides in pairs.values()
                if all(getattr(sides["full"][0], k) == v for k, v in shape.items())]
    return sides


def test_seed_example_mac_reduction():
    sides = _find(_pairs(), in_channels=192, out_channels=384, kernel_size=(3, 3))
    assert [s.kind for s in sides["factored"]] == ["depthwise", "pointwise"]
    ratio = _ratio(sides, "macs")
    assert ratio == Fraction(1, 384) + Fraction(1, 9)
    assert round(float(1 - ratio), 4) == 0.8863


def test_depthwise_separable_ratio_formula():
    for sides in _pairs().values():
        if [s.kind for s in sides["factored"]] == ["depthwise", "pointwise"]:
            full = sides["full"][0]
            kh, kw = full.kernel_size
            expected = Fraction(1, full.out_channels) + Fraction(1, kh * kw)
            assert _ratio(sides, "macs") == expected
            assert _ratio(sides, "params") == expected


def test_resnet_bottleneck_params():
    sides = _find(_pairs(), in_channels=256, out_channels=256, height=56)
    assert [(s.in_channels, s.out_channels, s.kernel_size) for s in sides["factored"]] == [
        (256, 64, (1, 1)), (64, 64, (3, 3)), (64, 256, (1, 1))]
    assert sum(s.params for s in sides["factored"]) == 69_632
    assert sides["full"][0].params == 589_824


# ---- loader errors ----------------------------------------------------------------------------

_GOOD = """\
[suite]
description = "test"

[[layer]]
name = "ok"
in_channels = 8
out_channels = 8
size = 14
"""


def _write(tmp_path, bad_layer: str):
    """A file whose second [[layer]] is `bad_layer`; returns (path, line of that [[layer]])."""
    text = _GOOD + "\n# the bad one\n" + textwrap.dedent(bad_layer)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    lines = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith("[[layer]]")]
    return path, lines[1]


@pytest.mark.parametrize("bad_layer, message", [
    ("""\
     [[layer]]
     name = "groups"
     in_channels = 8
     out_channels = 12
     groups = 3
     size = 14
     """, "groups=3"),
    ("""\
     [[layer]]
     name = "unknown"
     in_channels = 8
     out_channels = 8
     size = 14
     kernel = 3
     """, "unknown field"),
    ("""\
     [[layer]]
     name = "empty"
     in_channels = 8
     out_channels = 8
     size = 3
     kernel_size = 5
     """, "empty output"),
])
def test_bad_layer_names_file_and_line(tmp_path, bad_layer, message):
    path, line = _write(tmp_path, bad_layer)
    with pytest.raises(UserError) as info:
        suites.load(str(path))
    text = str(info.value)
    assert f"{path}:{line}" in text
    assert "[[layer]] #2" in text
    assert message in text


def test_bad_sweep_names_its_line(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(_GOOD + textwrap.dedent("""\

        [[sweep]]
        in_channels = [8, 9]
        out_channels = 12
        groups = 4
        size = 7
        """))
    with pytest.raises(UserError, match=re.escape(f"{path}:10 ([[sweep]] #1)")):
        suites.load(str(path))


def test_malformed_toml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(_GOOD + "\n[[layer]]\nname = \"x\"\nin_channels = = 8\n")
    with pytest.raises(UserError) as info:
        suites.load(str(path))
    text = str(info.value)
    assert str(path) in text and "malformed TOML" in text
    assert "line 12" in text


def test_unknown_suite_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="unknown suite"):
        suites.load("no_such_suite")
    with pytest.raises(UserError, match="does not exist"):
        suites.load(str(tmp_path / "missing.toml"))


def test_select():
    layers = _load("default").layers
    depthwise = suites.select(layers, "kind == 'depthwise'")
    assert depthwise and all(s.kind == "depthwise" for s in depthwise)
    assert suites.select(layers, None) == list(layers)
    with pytest.raises(UserError, match="bad --filter"):
        suites.select(layers, "kind === 'depthwise'")
    with pytest.raises(UserError, match="bad --filter"):
        suites.select(layers, "no_such_column > 3")


def test_sweep_over_two_strides(tmp_path):
    path = tmp_path / "strides.toml"
    path.write_text("[[sweep]]\nin_channels = 8\ndepthwise = true\nsize = 14\n"
                    "kernel_size = 3\npadding = 1\nstride = [1, 2]\n")
    assert sorted(s.stride for s in suites.load(str(path)).layers) == [(1, 1), (2, 2)]


def test_sweep_keeps_a_nested_pair_fixed_and_names_it(tmp_path):
    path = tmp_path / "pairs.toml"
    path.write_text('[[sweep]]\nname = "c{in_channels}_k{kernel_size}"\nin_channels = [4, 8]\n'
                    'out_channels = 8\nsize = 14\nkernel_size = [[1, 7]]\npadding = [[0, 3]]\n')
    layers = suites.load(str(path)).layers
    assert [s.name for s in layers] == ["c4_k1x7", "c8_k1x7"]
    assert {s.kernel_size for s in layers} == {(1, 7)}


def test_a_directory_named_like_a_builtin_suite_does_not_hide_it(tmp_path, monkeypatch):
    (tmp_path / "blocks").mkdir()  # e.g. a run directory written with --output blocks
    monkeypatch.chdir(tmp_path)
    assert suites.load("blocks").name == "blocks"
    (tmp_path / "results").mkdir()
    with pytest.raises(UserError, match="is a directory, not a file"):
        suites.load("results")  # a directory that is no builtin name is still not a suite file


def test_unknown_suite_settings_are_rejected(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[suite]\nbtach = 8\n[[layer]]\nin_channels = 4\nout_channels = 4\nsize = 4\n")
    with pytest.raises(UserError, match="may only set"):
        suites.load(str(path))
