"""Structured design spaces for conv2d on CPU targets (TVM 0.27 `tvm.s_tir`), at any vector width.

Why a structure. MetaSchedule's default space over TOPI's conv2d searches generic tilings and,
in 64 trials, stays below oneDNN (0.7-0.8x torch on ResNet-50 3x3 layers); a blocked layout alone
makes it worse. What beats oneDNN is the loop structure of TVM's former x86 `conv2d_NCHWc`
strategy (NeoCPU, USENIX ATC'19), fixed, with a handful of knobs (TVM_NOTES.md, "Full and
pointwise convs on x86"):

    data_pack   pad + pack the input to NCHW[ic_bn]c, rows in parallel, channel block vectorised
    fused(n, oc_chunk, row) [parallel]
      col_chunk (ceil(OW / reg_n): the last one a tail when reg_n does not divide OW)
        acc[reg_n, oc_bn] = 0                    a register tile: reg_n columns x oc_bn channels
        ic_chunk, kh, (ic_bn, kw [unrolled]) | (kw, ic_bn), reg_n [unrolled], oc_bn [vectorised]
        out tile = acc                           stored straight into the output layout

Pointwise is the same space with kh = kw = 1; depthwise has its own (the same tile, no reduction
over channels, taps unrolled). The weight is packed once, outside the timed call (layouts.Packed).

The pieces: `choices` (channel blocks and tile widths for a vector unit: plain Python),
`compute` (the TE computes), `schedule` (the structure, its knobs, the MetaSchedule space).

What it claims: every float32 conv that is full kxk (any kernel, stride and padding), pointwise
or depthwise with multiplier 1, whatever its output width and channel counts (tails and padded
channel blocks, `choices`). Grouped and dilated convs, depthwise multipliers and other dtypes are
not claimed: `unclaimed` says why, and the caller falls back to MetaSchedule's default space and
records that it did.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from pwbench.tvm_bridge import layouts, tvm_targets
from pwbench.tvm_bridge.layouts import BLOCKED, NCHW, NHWC
from pwbench.tvm_bridge.spaces import choices, compute
from pwbench.tvm_bridge.spaces.schedule import (Structure, fixed, knobs, mutate_categorical,
                                                space, space_fn)
from pwbench.workloads.spec import ConvSpec

__all__ = ["BLOCKED", "NCHW", "NHWC", "SPACES", "MAX_TASKS", "Plan", "Structure", "Task", "fixed",
           "knobs", "mutate_categorical", "plan", "space", "space_fn", "tasks", "unclaimed"]

SPACES = ("structured", "default")
MAX_TASKS = 4  # (ic_bn, oc_bn) pairs per layer: 2 x 2


def unclaimed(spec: ConvSpec) -> str | None:
    """Why the structured space does not take this conv (the default space does), or None."""
    if spec.dilation != (1, 1):
        return "dilated convs are not in the structured space"
    if spec.kind == "grouped":
        return "grouped convs are not in the structured space"
    if spec.kind == "depthwise" and spec.out_channels != spec.in_channels:
        return "depthwise convs with a channel multiplier are not in the structured space"
    if spec.dtype != "float32":
        return f"{spec.dtype} convs are not in the structured space (float32 only)"
    return None


@dataclass(frozen=True)
class Task:
    """One MetaSchedule task of a layer: its compute for one layout with the channel blocks fixed
    (they shape the packed weight and the blocked layout)."""
    spec: ConvSpec
    layout: str  # NCHW, NHWC (input and output) or BLOCKED: NCHW[ic_bn]c in, NCHW[oc_bn]c out
    ic_bn: int
    oc_bn: int
    lanes: int
    accumulators: int

    @property
    def depthwise(self) -> bool:
        return self.spec.kind == "depthwise"

    @property
    def packing(self) -> layouts.Packed:
        return layouts.Packed(self.spec, self.layout, self.ic_bn, self.oc_bn)

    @property
    def ic_padded(self) -> int:
        return self.packing.ic_padded

    @property
    def oc_padded(self) -> int:
        return self.packing.oc_padded

    @property
    def name(self) -> str:
        return f"{self.spec.id}_{self.layout}_b{self.ic_bn}x{self.oc_bn}"

    @property
    def reg_choices(self) -> list[int]:
        return choices.tiles(self.spec.out_hw[1], choices.vectors(self.oc_bn, self.lanes),
                             self.accumulators, 2 if self.depthwise else 4)

    @property
    def structures(self) -> list[Structure]:
        kw = self.spec.kernel_size[1]
        unroll = (False, True) if kw > 1 and not self.depthwise else (False,)
        store = {NCHW: ("direct", "cols"), NHWC: ("direct", "stage"), BLOCKED: ("direct",)}[self.layout]
        if self.oc_padded != self.spec.out_channels and self.layout != BLOCKED:
            store = ("stage",)  # padded channels are dropped by an unpack stage of its own
        in_place = (self.spec.padding == (0, 0) and self.layout != BLOCKED
                    and self.ic_padded == self.spec.in_channels)
        pack = ("stage", "inline") if in_place else ("stage",)
        return [Structure(u, s, p) for u, s, p in itertools.product(unroll, store, pack)]

    def func(self, index64: bool = False):
        """The task's PrimFunc (int64 extents for a Relax program: compute.py)."""
        return (compute.dw_func if self.depthwise else compute.conv_func)(self, index64)


@dataclass(frozen=True)
class Plan:
    """The space a layer is tuned in: the structured one with its tasks, or MetaSchedule's
    default space over TOPI's compute (asked for, or a fallback: `reason` says why)."""
    space: str
    reason: str = ""
    tasks: tuple = ()


def plan(spec: ConvSpec, target: dict, space: str) -> Plan:
    if space == "default":
        return Plan("default")
    if target.get("kind") != "llvm":
        return Plan("default", "the structured space is for CPUs")
    reason = unclaimed(spec)
    return Plan("default", reason) if reason else Plan("structured", "", tuple(tasks(spec, target)))


def tasks(spec: ConvSpec, target: dict, layout: str | None = None) -> list[Task]:
    """The layer's tasks in its own layout (or `layout`), or [] when the space does not claim it."""
    if unclaimed(spec):
        return []
    lanes, accumulators = tvm_targets.vector_unit(target)
    layout = layout or spec.layout
    if spec.kind == "depthwise":
        pairs = [(b, b) for b in choices.out_blocks(spec.in_channels, lanes)]
    else:
        pairs = list(itertools.product(choices.in_blocks(spec.in_channels, lanes),
                                       choices.out_blocks(spec.out_channels, lanes)))
    return [Task(spec, layout, i, o, lanes, accumulators) for i, o in pairs[:MAX_TASKS]]
