"""Suites: TOML files in suites/ that list conv layers, or grids of them (format in suites/README.md)."""

from __future__ import annotations

import itertools
import math
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

from pwbench import files
from pwbench.errors import UserError
from pwbench.workloads import layer_filter
from pwbench.workloads.blocks import Block
from pwbench.workloads.spec import ConvSpec, as_pair, pair_text

MAX_LAYERS = 10_000  # a suite larger than this is a mistake (a sweep of 1,000 x 1,000 took minutes
# to load and would take weeks to measure)
SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"  # pwbench/suites: in the wheel, or a link to suites/
DEFAULT_SUITE = "default"

_SPEC_FIELDS = {
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
    "groups", "dtype", "layout", "batch", "height", "width", "count", "pair", "side",
}
_SHORTCUTS = {"name", "size", "depthwise"}
_SUITE_DEFAULTS = {"batch", "layout", "dtype"}


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: Path
    layers: tuple[ConvSpec, ...]

    @property
    def gflops(self) -> float:
        """Network total, weighted by how often each layer occurs."""
        return sum(s.flops * s.count for s in self.layers) / 1e9


def builtin_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    builtin = SUITES_DIR / f"{name_or_path}.toml"
    # a file given by path; a builtin name wins over anything else of that name (a run directory
    # called `blocks` must not hide the builtin suite); `load` says what is wrong with the rest
    given = path.suffix == ".toml" or os.path.lexists(path)
    if path.is_file() or (given and not builtin.is_file()):
        return path
    if not builtin.is_file():
        known = builtin_suites()
        if not known:  # a package built without its data files
            raise UserError(f"no builtin suites in {SUITES_DIR} (a broken installation of "
                            "pwbench?): reinstall it, or give the path of a .toml suite file")
        raise UserError(f"unknown suite {name_or_path!r}: choose one of {', '.join(known)} "
                        "or give the path of a .toml suite file")
    return builtin


def load(name_or_path: str = DEFAULT_SUITE, **overrides) -> Suite:
    """Load a suite; overrides (batch, layout, dtype) replace every layer's value when not None.
    A layout may be a list (`layout = ["NCHW", "NHWC"]` in [suite], or the override "NCHW,NHWC"):
    every layer that does not set its own is then measured in each, one after the other."""
    path = resolve(name_or_path)
    text = files.read_text(path, "suite file")
    data = files.parse_toml(text, path)
    head = data.get("suite", {})
    if not isinstance(head, dict) or set(head) - _SUITE_DEFAULTS - {"description"}:
        raise UserError(f"{path}: [suite] may only set description, {', '.join(sorted(_SUITE_DEFAULTS))}")
    if not isinstance(head.get("description", ""), str):
        raise UserError(f"{path}: [suite] description must be text")
    defaults = {k: head[k] for k in _SUITE_DEFAULTS if k in head}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    defaults.update(overrides)
    layouts = _layouts(defaults.pop("layout", "NCHW"), path)
    forced = overrides.pop("layout", None) is not None  # --layout beats a layer's own
    unknown_top = set(data) - {"suite", "layer", "sweep", "block"}
    if unknown_top:
        raise UserError(f"{path}: unknown table(s) {sorted(unknown_top)}; use [suite], [[layer]], "
                        "[[sweep]], [[block]]")
    specs = []
    makers = {"layer": lambda e, d, o: [_make_spec(e, d, o)],
              "sweep": lambda e, d, o: [_make_spec(f, d, o) for f in _expand_sweep(e)],
              "block": lambda e, d, o: _make_block(e, d, o)}
    for table, make in makers.items():
        lines = _header_lines(text, table)
        for i, entry in enumerate(_entries(data, table, path)):
            where = f"{path}:{lines[i] if i < len(lines) else '?'} ([[{table}]] #{i + 1})"
            own = "layout" in entry and not forced
            for layout in ([entry["layout"]] if own else layouts):
                fixed = {"layout": layout} if forced else {}
                try:
                    specs += make(entry, defaults | {"layout": layout}, overrides | fixed)
                except UserError as exc:
                    raise UserError(f"{where}: {exc}") from None
    if not specs:
        raise UserError(f"{path}: no [[layer]], [[sweep]] or [[block]] entries")
    if len(specs) > MAX_LAYERS:
        raise UserError(f"{path}: {len(specs)} layers, more than the {MAX_LAYERS} a suite may hold")
    return Suite(path.stem, head.get("description", ""), path, tuple(specs))


def _layouts(value, path) -> list[str]:
    """A layout, a list of them, or a comma-separated text of them."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise UserError(f"{path}: layout must be a layout or a list of layouts, got {value!r}")
    return list(dict.fromkeys(v.strip() for v in items))


def _header_lines(text: str, table: str) -> list[int]:
    pattern = re.compile(rf"^\s*\[\[\s*{table}\s*\]\]")
    return [n for n, line in enumerate(text.splitlines(), 1) if pattern.match(line)]


def _entries(data: dict, table: str, path) -> list:
    entries = data.get(table, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path}: {table} must be written [[{table}]], one table per entry")
    return entries


def _expand_sweep(entry: dict) -> list[dict]:
    """Cartesian product over every list-valued field; a fixed pair inside a sweep is nested:
    ``kernel_size = [[1, 7]]``. The name template may use fields by name, nothing else of them."""
    axes = {k: v for k, v in entry.items() if isinstance(v, list)}
    if not axes:
        raise UserError("a [[sweep]] needs at least one list-valued field to sweep over")
    size = math.prod(len(v) for v in axes.values())
    if size > MAX_LAYERS:  # counted before a single one is made
        raise UserError(f"this sweep makes {size} layers, more than the {MAX_LAYERS} a suite may "
                        "hold")
    _check_template(entry.get("name", ""))
    out = []
    for values in itertools.product(*axes.values()):
        fields = {**entry, **dict(zip(axes, values))}
        template = entry.get("name", "")
        shown = {k: pair_text(v) if isinstance(v, list) else v for k, v in fields.items()}
        try:
            fields["name"] = template.format(**shown)
        except (KeyError, IndexError, ValueError) as exc:
            raise UserError(f"bad name template {template!r}: {exc}") from None
        out.append(fields)
    return out


def _check_template(template) -> None:
    """`{field}` only: str.format would also reach attributes and items (`{size.__class__}`)."""
    if not isinstance(template, str):
        raise UserError(f"name must be text, got {template!r}")
    try:
        fields = [f for _, f, spec, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise UserError(f"bad name template {template!r}: {exc}") from None
    bad = [f for f in fields if not f.isidentifier()]
    if bad:
        raise UserError(f"bad name template {template!r}: {{{bad[0]}}} is not a field name "
                        "(write {in_channels}, {size}, ...)")


def _merged(fields: dict, allowed: set, defaults: dict, overrides: dict, what: str = "") -> dict:
    """An entry's fields over the suite's defaults, under the command line's overrides, with
    `size` expanded to height and width."""
    unknown = set(fields) - allowed
    if unknown:
        raise UserError(f"unknown {what}field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    f = {**defaults, **fields}
    f.update({k: v for k, v in overrides.items() if v is not None})
    if "size" in f:
        size = f.pop("size")
        f.setdefault("height", size)
        f.setdefault("width", size)
    return f


def _require(f: dict, names) -> None:
    for name in names:
        if name not in f:
            raise UserError(f"missing field {name!r}")


def _make_spec(fields: dict, defaults: dict, overrides: dict) -> ConvSpec:
    f = _merged(fields, _SPEC_FIELDS | _SHORTCUTS, defaults, overrides)
    if f.pop("depthwise", False):
        f.setdefault("out_channels", f.get("in_channels"))
        f["groups"] = f.get("in_channels")
    _require(f, ("in_channels", "out_channels", "height", "width"))
    if f.get("padding") == "half":  # keeps the spatial size at stride 1
        (kh, kw) = as_pair(f.get("kernel_size", 1), "kernel_size")
        (dh, dw) = as_pair(f.get("dilation", 1), "dilation")
        f["padding"] = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
    f.setdefault("batch", 1)
    return ConvSpec(**f)


_BLOCK_FIELDS = {"kind", "name", "in_channels", "out_channels", "mid_channels", "kernel_size",
                 "stride", "expand", "reduction", "batch", "height", "width", "size", "dtype",
                 "layout", "count", "seed", "layers", "replaces"}


def _make_block(fields: dict, defaults: dict, overrides: dict) -> list:
    """A block, then (unless layers = false) each of its convs alone, then (with replaces = true)
    the full conv it stands in for, paired with it for the seeds' comparison."""
    f = _merged(fields, _BLOCK_FIELDS, defaults, overrides, "block ")
    _require(f, ("kind", "in_channels", "out_channels", "height", "width"))
    with_layers, replaces = f.pop("layers", True), f.pop("replaces", False)
    f.setdefault("batch", 1)
    if replaces:
        f |= {"pair": f.get("name") or "", "side": "factored"}
    try:
        block = Block(**f)
    except TypeError as exc:  # a field of the wrong kind of value
        raise UserError(str(exc)) from None
    if replaces and not block.name:
        raise UserError("a block with replaces = true needs a name (it pairs by name)")
    return [block, *(block.layers() if with_layers else []), *([block.replaces()] if replaces else [])]


def select(specs, expr: str | None) -> list:
    """Keep the layers a --filter selects (workloads/layer_filter.py: parsed, never evaluated),
    e.g. ``kind == 'depthwise' and stride == 2`` or ``layer.startswith('conv1')``."""
    return layer_filter.select(specs, expr)
