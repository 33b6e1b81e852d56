"""--filter is a small language of its own: parsed, checked node by node, never run as Python."""

import pytest

from pwbench.errors import UserError
from pwbench.workloads import suites
from pwbench.workloads.layer_filter import FilterError, compile_filter
from pwbench.workloads.spec import ConvSpec

pytestmark = pytest.mark.unit

LAYERS = [
    ConvSpec(batch=1, name="stem.conv", in_channels=3, out_channels=32, height=32, width=32, kernel_size=3,
             stride=2, padding=1),
    ConvSpec(batch=1, name="block1.expand", in_channels=32, out_channels=192, height=16, width=16),
    ConvSpec(batch=1, name="block1.dw", in_channels=192, out_channels=192, groups=192, height=16,
             width=16, kernel_size=3, padding=1),
    ConvSpec(batch=1, name="block2.dw", in_channels=192, out_channels=192, groups=192, height=16,
             width=16, kernel_size=3, stride=2, padding=1),
    ConvSpec(batch=1, name="inception.1x7", in_channels=64, out_channels=64, height=8, width=8,
             kernel_size=(1, 7), padding=(0, 3)),
]


def names(text: str) -> list[str]:
    return [s.name for s in suites.select(LAYERS, text)]


@pytest.mark.parametrize("text, expected", [
    ("kind == 'depthwise'", ["block1.dw", "block2.dw"]),
    ("kind == 'depthwise' and stride == '2'", ["block2.dw"]),
    ("kind == 'depthwise' and stride == 2", ["block2.dw"]),  # a pair's text against a number
    ("stride > 1", ["stem.conv", "block2.dw"]),
    ("kernel_size == '1x7' or out_channels >= 192", ["block1.expand", "block1.dw", "block2.dw",
                                                     "inception.1x7"]),
    ("kernel_size > 1", ["stem.conv", "block1.dw", "block2.dw"]),  # '1x7' is no number
    ("layer in ['stem.conv', 'block2.dw']", ["stem.conv", "block2.dw"]),
    ("layer not in ('stem.conv',) and kind != 'depthwise'", ["block1.expand", "inception.1x7"]),
    ("'expand' in layer", ["block1.expand"]),
    ("layer.startswith('block1')", ["block1.expand", "block1.dw"]),
    ("not layer.endswith('dw') and in_channels < 64", ["stem.conv", "block1.expand"]),
    ("16 <= height < 32", ["block1.expand", "block1.dw", "block2.dw"]),
    ("(kind == 'pointwise') or (kind == 'full' and groups == 1 and padding == '0x3')",
     ["block1.expand", "inception.1x7"]),
    ("in_channels > -1.5e3", [s.name for s in LAYERS]),
])
def test_conditions_over_layer_columns(text, expected):
    assert names(text) == expected


HOSTILE = [
    "@pd.io.common.os.system('touch PWNED')",
    "__import__('os').system('touch PWNED')",
    "layer.__class__.__mro__[1].__subclasses__()",
    "().__class__.__bases__[0].__subclasses__()",
    "open('PWNED', 'w').write('x')",
    "(lambda: __import__('os').system('touch PWNED'))()",
    "[x for x in ().__class__.__base__.__subclasses__()]",
    "f'{__import__(\"os\").system(\"touch PWNED\")}' == ''",
    "layer == 'a' * 10 ** 9",
    "(x := 1) == 1",
    "kind == 'depthwise' if True else 0",
    "layer.upper() == 'STEM.CONV'",
    "layer.str.contains('conv')",
    "layer.startswith(layer)",
    "kind[0] == 'd'",
    "{**{}} == {}",
    "kind == 'depthwise' & stride == 2",
    "kind",
    "True",
    "kind ==",
    "kind is 'depthwise'",
    "nosuch == 1",
    "kind == 'depthwise'; import os",
    "kind == 'depthwise'\x00",
    "(" * 100_000 + "kind == 'x'" + ")" * 100_000,
    "not " * 100_000 + "kind == 'x'",
    "[" * 60 + "1" + "]" * 60 + " == 1",
    "kind == '" + "x" * 3000 + "'",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_anything_else_is_one_line_and_nothing_runs(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^bad --filter") as caught:
        suites.select(LAYERS, text)
    assert "\n" not in str(caught.value).replace("\\n", "")
    assert not (tmp_path / "PWNED").exists()


def test_the_compiled_filter_never_evaluates_python(monkeypatch):
    """Even a filter that is accepted is evaluated by pwbench's own functions, not eval/exec."""
    import builtins

    def refuse(*args, **kwargs):
        raise AssertionError("eval or exec was called")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    keep = compile_filter("kind == 'depthwise' and 'dw' in layer", ["kind", "layer"])
    assert keep({"kind": "depthwise", "layer": "b.dw"}) and not keep({"kind": "full", "layer": "x"})
    with pytest.raises(FilterError, match="no column 'os'"):
        compile_filter("os == 1", ["kind"])
