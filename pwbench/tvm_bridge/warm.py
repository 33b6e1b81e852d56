"""Warm starts: the structured schedules of the default suite, tuned once for each common x86
vector width and shipped with pwbench (warm/<isa>.json), so that a first look on a machine of
that width begins where 64 trials of tuning ended. A layer with a shipped schedule measures it
first (its channel blocks' task first, its knobs the first point of that task: search.py), on
this machine, as any candidate; the tuner then goes on with the trials asked, and every kernel
is verified and timed here as always. Rows say what the warm start did (`warm_start`).

The knobs travel, not the schedules: a register tile of `reg_n` columns x `oc_bn` channels, the
channel blocks and the structure depend only on the vector width, so a table made with
`-mcpu=haswell` serves every AVX2 CPU, and one made with `skylake-avx512` every AVX-512 one
(`python scripts/warm_start.py` makes them).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from pwbench.tvm_bridge import tvm_targets

TABLES = Path(__file__).parent / "warm"


def isa(target: dict) -> str | None:
    """The table a target takes: x86 by its vector width, none for other architectures."""
    if str(target.get("mtriple", "x86_64")).split("-")[0] not in ("x86_64", ""):
        return None
    lanes, _ = tvm_targets.vector_unit(target)
    return {8: "x86-avx2", 16: "x86-avx512"}.get(lanes)


@cache
def _load(name: str) -> dict:
    path = TABLES / f"{name}.json"
    return json.loads(path.read_text())["layers"] if path.exists() else {}


def knobs(target: dict) -> dict[str, str]:
    """{spec id: knobs text (layers.knobs_text)} of the shipped table for the target, or {}."""
    name = isa(target)
    return _load(name) if name else {}


def parse(text: str) -> dict:
    """'ic_bn=16;oc_bn=16;reg_n=14;unroll_kw=0;store=direct;pack=stage' as a dict of strings."""
    return dict(part.split("=", 1) for part in text.split(";"))
