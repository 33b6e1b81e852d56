"""Models -> suites: `pwbench suite from-onnx` on ONNX files the tests write (torch.onnx.export
with dynamo=False, or onnx.helper for what torch does not export), `from-torchvision` against the
hand-written network suites, and bad input as one line and exit 2."""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from conftest import run_pwbench
from pwbench import cli
from pwbench.errors import UserError
from pwbench.workloads import onnx_convs, suite_file, suites
from pwbench.workloads.spec import ConvSpec

HAVE = all(importlib.util.find_spec(m) for m in ("onnx", "torch"))
HAVE_TV = HAVE and importlib.util.find_spec("torchvision") is not None
pytestmark = pytest.mark.skipif(not HAVE, reason="needs onnx and torch: pip install -e '.[models]'")


def _export(module, shape, path, dynamic=None):
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module.eval(), (torch.zeros(shape),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": dynamic, "y": {0: "N"}} if dynamic else None)
    return path


def small_net():
    """Known layers: a stem, two identical 3x3 convs (folded, count 2), a strided depthwise, a
    pointwise, a 1x3 with per-axis pads, and a conv module called twice (count 2)."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1))
            self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
            self.pw = nn.Conv2d(8, 16, 1)
            self.wide = nn.Conv2d(16, 16, (1, 3), padding=(0, 1))

        def forward(self, x):
            y = self.pw(self.dw(self.body(self.stem(x))))
            return self.wide(self.wide(y))

    return Net()


EXPECTED = {  # spec (batch 2) -> (count, name)
    ConvSpec(2, 3, 8, 16, 16, 3, 1, 1): (1, "stem"),
    ConvSpec(2, 8, 8, 16, 16, 3, 1, 1): (2, "body.0 (+1 more)"),  # body.1 is the ReLU
    ConvSpec(2, 8, 8, 16, 16, 3, 2, 1, groups=8): (1, "dw"),
    ConvSpec(2, 8, 16, 8, 8): (1, "pw"),
    ConvSpec(2, 16, 16, 8, 8, (1, 3), 1, (0, 1)): (2, "wide (+1 more)"),
}


def _layers(path) -> dict:
    return {s.id: (s.count, s.name) for s in suites.load(str(path)).layers}


@pytest.mark.cli
def test_an_onnx_model_gives_exactly_its_conv_shapes_and_counts(tmp_path, pwbench):
    model = _export(small_net(), (1, 3, 16, 16), tmp_path / "net.onnx", dynamic={0: "N"})
    proc = pwbench("suite", "from-onnx", model, "--batch", "2", "--output", tmp_path / "net.toml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (f"wrote {tmp_path / 'net.toml'}: 7 convs as 5 layers "
                                   "(identical shapes folded with count); none skipped")
    assert _layers(tmp_path / "net.toml") == {s.id: v for s, v in EXPECTED.items()}
    text = (tmp_path / "net.toml").read_text()
    # every name is kept; a module called twice has a second scope, wide_1
    assert "# body.0, body.2\n" in text and "# wide, wide_1\n" in text
    assert "Biases: 6 of the 7 convs have one" in text and "N = 2" in text


@pytest.mark.cpu
def test_convtranspose_and_3d_convs_are_listed_as_skipped(tmp_path):
    from torch import nn

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 8, 3, padding=1)
            self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
            self.volume = nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 1, 1))

        def forward(self, x):
            return self.up(self.conv(x)), self.volume(x.unsqueeze(2))

    model = onnx_convs.load(_export(Mixed(), (1, 4, 8, 8), tmp_path / "mixed.onnx"))
    found = onnx_convs.convs(model)
    assert [s.id for s in found.convs] == [ConvSpec(1, 4, 8, 8, 8, 3, 1, 1).id]
    assert [(s.name, s.op_type) for s in found.skipped] == [("up", "ConvTranspose"), ("volume", "Conv")]
    assert "3-D convolution (input rank 5)" in found.skipped[1].reason
    text = suite_file.to_toml(found, "mixed.onnx", "mixed", "test")
    assert "#   up (ConvTranspose): ConvTranspose is not a 2-D float Conv" in text
    assert "#   volume (Conv): 3-D convolution (input rank 5)" in text
    assert "2 not representable, listed in the file: 1 ConvTranspose, 1 3-D conv" in text


def _helper_model(path, nodes, inputs, initializers=(), elem=1):
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, elem, s) for n, s in inputs],
                              [helper.make_tensor_value_info("y", elem, ["n", "c", "h", "w"])], list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _weight(name, shape, elem=1):
    from onnx import helper

    count = 1
    for d in shape:
        count *= d
    return helper.make_tensor(name, elem, shape, [0] * count)


@pytest.mark.unit
def test_auto_pad_same_gives_symmetric_or_skipped_asymmetric_pads(tmp_path):
    from onnx import helper

    conv = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])
    odd = onnx_convs.convs(onnx_convs.load(_helper_model(
        tmp_path / "odd.onnx", [conv], [("x", [1, 4, 15, 15])], [_weight("w", [8, 4, 3, 3])])))
    assert odd.convs[0].padding == (1, 1) and odd.convs[0].out_hw == (8, 8)
    even = onnx_convs.convs(onnx_convs.load(_helper_model(
        tmp_path / "even.onnx", [conv], [("x", [1, 4, 16, 16])], [_weight("w", [8, 4, 3, 3])])))
    assert not even.convs and "asymmetric padding (top, left, bottom, right) = (0, 0, 1, 1)" \
        in even.skipped[0].reason


@pytest.mark.unit
def test_dynamic_spatial_dims_are_skipped_until_given(tmp_path):
    from onnx import helper

    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="c")
    path = _helper_model(tmp_path / "dyn.onnx", [conv], [("x", ["N", 4, "H", "W"])],
                         [_weight("w", [8, 4, 3, 3])])
    found = onnx_convs.convs(onnx_convs.load(path))
    assert not found.convs and "dynamic shape: input [1, 4, H, W]" in found.skipped[0].reason
    given = onnx_convs.convs(onnx_convs.load(path), batch=3, dims={"H": 10, "W": 12})
    assert given.convs[0].id == ConvSpec(3, 4, 8, 10, 12, 3, 1, 1).id
    assert given.resolved == {"N": 3, "H": 10, "W": 12}


@pytest.mark.unit
def test_integer_convs_are_skipped_by_type(tmp_path):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="int_conv")]
    path = _helper_model(tmp_path / "int.onnx", nodes, [("x", [1, 4, 8, 8])],
                         [_weight("w", [8, 4, 1, 1], TensorProto.INT32)], elem=TensorProto.INT32)
    found = onnx_convs.convs(onnx_convs.load(path))
    assert found.skipped[0].reason == "element type INT32 (not a float)"


@pytest.mark.unit
def test_a_fixed_batch_cannot_be_changed_by_batch(tmp_path):
    from onnx import helper

    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    path = _helper_model(tmp_path / "fixed.onnx", [conv], [("x", [4, 4, 8, 8])],
                         [_weight("w", [8, 4, 1, 1])])
    assert onnx_convs.convs(onnx_convs.load(path)).batch == 4
    with pytest.raises(UserError, match="batch is fixed at 4"):
        onnx_convs.convs(onnx_convs.load(path), batch=2)


@pytest.mark.unit
@pytest.mark.parametrize("names, folded", [
    (["layer3.1.conv1", "layer3.2.conv1", "layer3.3.conv1"], "layer3.1-3.conv1"),
    (["a.1", "a.3"], "a.1 (+1 more)"),
    (["x.conv", "y.conv"], "x.conv (+1 more)"),
    (["only"], "only"),
])
def test_folded_names(names, folded):
    assert suite_file.compress(names) == folded


# ---- torchvision -----------------------------------------------------------------------------

NETWORKS = [("resnet50", "resnet50"), ("mobilenet_v2", "mobilenetv2"),
            ("efficientnet_b0", "efficientnet_b0"), ("inception_v3", "inception_v3")]


@pytest.mark.cpu
@pytest.mark.skipif(not HAVE_TV, reason="needs torchvision: pip install -e '.[models]'")
@pytest.mark.parametrize("model, suite", NETWORKS)
def test_builtin_network_suites_equal_what_torchvision_gives(model, suite, tmp_path):
    """Per layer shape and count; the hand-written suites fold by role (two entries can share a
    shape), the generated ones by shape, so names may differ."""
    from pwbench.workloads import torchvision_models

    found = onnx_convs.convs(torchvision_models.onnx_model(model, torchvision_models.input_size(model)))
    assert not found.skipped
    path = tmp_path / f"{model}.toml"
    path.write_text(suite_file.to_toml(found, model, model, "test"))
    generated, builtin = Counter(), Counter()
    for spec in suites.load(str(path)).layers:
        generated[spec.id] += spec.count
    for spec in suites.load(suite).layers:
        builtin[spec.id] += spec.count
    assert generated == builtin


@pytest.mark.cli
@pytest.mark.skipif(not HAVE_TV, reason="needs torchvision: pip install -e '.[models]'")
def test_from_torchvision_writes_the_suite_to_stdout(tmp_path, capsys):
    assert cli.main(["suite", "from-torchvision", "mobilenet_v2", "--batch", "4", "--size", "96"]) == 0
    out, err = capsys.readouterr()
    assert err.strip().endswith("52 convs as 30 layers (identical shapes folded with count); "
                                "none skipped")
    (tmp_path / "m.toml").write_text(out)
    suite = suites.load(str(tmp_path / "m.toml"))
    assert sum(s.count for s in suite.layers) == 52
    assert {s.batch for s in suite.layers} == {4} and suite.layers[0].height == 96


@pytest.mark.cli
@pytest.mark.parametrize("case, says", [
    ("truncated", "is not an ONNX model (it does not parse"),
    ("empty", "is not a valid ONNX model"),
    ("text", "is not an ONNX model"),
    ("no convs", "has no Conv node: nothing to benchmark"),
    ("only dynamic", "has 1 conv node(s) but none a suite can hold"),
    ("missing", "does not exist"),
    ("bad dim", "--dim 'H': expected NAME=VALUE"),
    ("unknown dim", "--dim Q: no graph input has such a symbolic dim (they have: H, N, W)"),
    ("unknown torchvision", "unknown torchvision classification model 'resnet5'; did you mean"),
])
def test_bad_models_are_one_line_and_exit_2(case, says, tmp_path, capsys):
    """In this process (cli.main, as the console script runs it): each case is one line, exit 2;
    the console script itself is run on the first case."""
    from torch import nn

    good = _export(small_net(), (1, 3, 16, 16), tmp_path / "good.onnx")
    data = good.read_bytes()
    dynamic = tmp_path / "dyn.onnx"
    if case in ("only dynamic", "unknown dim"):
        _export(nn.Conv2d(3, 4, 3), (1, 3, 8, 8), dynamic, dynamic={0: "N", 2: "H", 3: "W"})
    files = {"truncated": data[: len(data) // 2], "empty": b"", "text": b"not a model\n"}
    if case in files:
        (tmp_path / "bad.onnx").write_bytes(files[case])
    args = {"truncated": [tmp_path / "bad.onnx"], "empty": [tmp_path / "bad.onnx"],
            "text": [tmp_path / "bad.onnx"],
            "no convs": [_export(nn.ReLU(), (1, 3, 4, 4), tmp_path / "relu.onnx")],
            "only dynamic": [dynamic], "missing": [tmp_path / "nothing.onnx"],
            "bad dim": [good, "--dim", "H"], "unknown dim": [dynamic, "--dim", "Q=3"]}
    if case == "unknown torchvision" and not HAVE_TV:
        pytest.skip("needs torchvision")
    argv = (["suite", "from-torchvision", "resnet5"] if case == "unknown torchvision" else
            ["suite", "from-onnx", *map(str, args[case])])
    if case == "truncated":  # the installed console script, as a user types it
        proc = run_pwbench(*argv)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        code = cli.main(argv)
        out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pwbench: error: ") and says in lines[0], err
