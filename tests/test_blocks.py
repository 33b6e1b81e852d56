"""Blocks as workloads: their structure and costs, suite entries, the float64 reference, and the
verifier's bound (correct torch modules pass it, planted mistakes do not)."""

import numpy as np
import pytest

from pwbench import targets
from pwbench.backends import torch_backend
from pwbench.backends.base import Options
from pwbench.errors import UserError
from pwbench.measure import verify
from pwbench.workloads import suites
from pwbench.workloads.blocks import Block

BLOCKS = {
    "bottleneck": Block("bottleneck", 1, 64, 256, 14, 14, mid_channels=32),
    "bottleneck_strided": Block("bottleneck", 2, 64, 128, 14, 14, mid_channels=32, stride=2),
    "inverted_residual": Block("inverted_residual", 1, 24, 24, 14, 14),
    "inverted_residual_strided": Block("inverted_residual", 1, 24, 32, 14, 14, stride=2),
    "separable": Block("separable", 1, 32, 64, 14, 14),
    "se": Block("se", 1, 64, 64, 7, 7, mid_channels=16),
    "inception_branch": Block("inception_branch", 1, 64, 96, 9, 9, mid_channels=48, kernel_size=7),
}


@pytest.mark.unit
def test_a_bottleneck_has_the_seeds_8_5x_fewer_parameters_than_the_conv_it_replaces():
    block = Block("bottleneck", 1, 256, 256, 56, 56, mid_channels=64)
    assert [c.kind for c in block.convs] == ["pointwise", "full", "pointwise"]
    assert block.params == 256 * 64 + 64 * 64 * 9 + 64 * 256 == 69_632
    assert block.replaces().params / block.params == pytest.approx(8.47, abs=0.01)


@pytest.mark.unit
def test_a_separable_block_costs_1_over_c_out_plus_1_over_k2_of_the_full_conv():
    block = Block("separable", 1, 192, 384, 28, 28, kernel_size=3)
    assert block.flops / block.replaces().flops == pytest.approx(1 / 384 + 1 / 9)


@pytest.mark.unit
def test_structure_follows_the_kind():
    strided = BLOCKS["bottleneck_strided"]
    assert strided.shortcut is not None and strided.shortcut.stride == (2, 2)  # projection
    assert BLOCKS["bottleneck"].shortcut is not None  # 64 -> 256 channels: projection too
    assert BLOCKS["inverted_residual"].residual and not BLOCKS["inverted_residual_strided"].residual
    assert BLOCKS["se"].output_shape == BLOCKS["se"].input_shape
    assert [c.kernel_size for c in BLOCKS["inception_branch"].convs] == [(1, 1), (1, 7), (7, 1)]
    assert BLOCKS["separable"].bytes < sum(c.bytes for c in BLOCKS["separable"].convs)  # fused
    ids = {b.id for b in BLOCKS.values()}
    assert len(ids) == len(BLOCKS)


@pytest.mark.unit
@pytest.mark.parametrize("fields, message", [
    ({"kind": "ladder"}, "block kind 'ladder' is not one of"),
    ({"kind": "bottleneck"}, "needs mid_channels"),
    ({"kind": "se", "out_channels": 32}, "keeps its channels"),
    ({"kind": "separable", "stride": 0}, "stride must be a positive integer"),
])
def test_impossible_blocks_are_refused(fields, message):
    with pytest.raises(UserError, match=message):
        Block(**({"batch": 1, "in_channels": 16, "out_channels": 16, "height": 8, "width": 8} | fields))


@pytest.mark.unit
def test_a_suite_block_brings_its_layers_and_the_conv_it_replaces(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text('[[block]]\nname = "b1"\nkind = "separable"\nin_channels = 16\n'
                    'out_channels = 32\nsize = 8\nreplaces = true\n'
                    '[[block]]\nname = "b2"\nkind = "se"\nin_channels = 16\nout_channels = 16\n'
                    'size = 8\nlayers = false\n')
    workloads = suites.load(str(path)).layers
    assert [w.label for w in workloads] == ["b1", "b1/dw", "b1/pw", "b1/full", "b2"]
    assert [w.part_of for w in workloads[1:3]] == ["b1", "b1"]
    assert (workloads[0].side, workloads[3].side) == ("factored", "full")
    assert workloads[0].pair == workloads[3].pair == "b1"


@pytest.mark.unit
def test_a_malformed_block_entry_names_file_and_line(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text('[suite]\ndescription = "x"\n\n[[block]]\nkind = "separable"\nin_channels = 16\n'
                    'size = 8\nwidth_multiplier = 2\n')
    with pytest.raises(UserError, match=r"b.toml:4 \(\[\[block\]\] #1\): unknown block field"):
        suites.load(str(path))


@pytest.mark.unit
def test_the_builtin_blocks_suite_loads():
    suite = suites.load("blocks")
    kinds = {w.kind for w in suite.layers if isinstance(w, Block)}
    assert kinds == {"bottleneck", "inverted_residual", "separable", "se", "inception_branch"}


def torch_kernel(block):
    return torch_backend.Backend(targets.resolve("cpu"), Options(threads=1)).build(block).make()


@pytest.mark.cpu
@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_torch_modules_pass_the_reference_of_every_block_kind(name, layout):
    block = BLOCKS[name].replace(layout=layout)
    check = verify.check(torch_kernel(block), block)
    assert check.verdict == "passed", check.detail
    assert check.max_rel_err < 1e-5


class Planted:
    """A torch block kernel with one mistake in its output."""

    def __init__(self, block, mistake):
        self.inner, self.mistake = torch_kernel(block), mistake
        self.load, self.inputs, self.exact, self.clock = (
            self.inner.load, self.inner.inputs, True, self.inner.clock)

    def __call__(self):
        self.inner()

    def result(self):
        return self.mistake(self.inner.result().copy())


def _tiny_error(y):
    y.flat[7] += 1e-4 * np.abs(y).max()  # one element off by 0.01 % of the output's range
    return y


@pytest.mark.cpu
@pytest.mark.parametrize("name, mistake", [
    ("inverted_residual", _tiny_error), ("separable", _tiny_error), ("inception_branch", _tiny_error),
    ("bottleneck", _tiny_error), ("se", lambda y: y * 1.001),
    ("inverted_residual", lambda y: np.maximum(y, 0)),  # a ReLU after the linear projection
], ids=["ir one element 0.01 %", "separable one element", "inception one element",
        "bottleneck one element", "se 0.1 % gain", "ir a ReLU too many"])
def test_planted_mistakes_fail(name, mistake):
    block = BLOCKS[name]
    check = verify.check(Planted(block, mistake), block)
    assert check.verdict == "failed" and "rounding bound" in check.detail
