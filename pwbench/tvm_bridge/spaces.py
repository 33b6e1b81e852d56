"""Structured design spaces for conv2d on CPU targets (TVM 0.27 `tvm.s_tir`).

Why a structure. MetaSchedule's default space over TOPI's conv2d searches generic tilings and,
in 64 trials, stays below oneDNN (0.7-0.8x torch on ResNet-50 3x3 layers); a blocked layout alone
makes it worse. What beats oneDNN is the loop structure of TVM's former x86 `conv2d_NCHWc`
strategy (NeoCPU, USENIX ATC'19), fixed, with a handful of knobs (TVM_NOTES.md, "Full and
pointwise convs on x86"):

    data_pack   pad + pack the input to NCHW[ic_bn]c, rows in parallel, channel block vectorised
    fused(n, oc_chunk, row) [parallel]
      col_chunk (OW / reg_n)
        acc[reg_n, oc_bn] = 0                    a register tile: reg_n columns x oc_bn channels
        ic_chunk, kh, (ic_bn, kw [unrolled]) | (kw, ic_bn), reg_n [unrolled], oc_bn [vectorised]
        out tile = acc                           stored straight into the output layout

Pointwise is the same space with kh = kw = 1; depthwise has its own (the same tile, no reduction
over channels, taps unrolled). The weight is packed once, outside the timed call, to
(O/oc_bn, I/ic_bn, kh, kw, ic_bn, oc_bn) (depthwise: (C/bn, kh, kw, bn)).

What MetaSchedule draws, and how. MetaSchedule never re-runs a schedule function: it replays the
recorded trace with new decisions, so a knob that steers Python control flow is frozen at its
first draw. Hence
- reg_n is a `sample_categorical` whose random variable *is* the split factor, so a replayed
  or mutated decision changes the tile;
- each structural choice (unroll kw or not, how the tile is stored, whether the input is packed
  in a stage or read in place) is its own design space: the ScheduleFn returns one schedule per
  choice, and the search samples them all;
- no mutator of TVM 0.27 changes a plain `sample_categorical` (MutateTileSize, MutateUnroll,
  MutateParallel, MutateComputeLocation only touch their own instructions), so the space brings
  `MutateCategorical`, which re-draws one of them;
- the channel blocks ic_bn and oc_bn change the packed weight's shape, so each (ic_bn, oc_bn)
  is its own task (a PrimFunc with its own buffers), at most MAX_TASKS per layer, and the task
  scheduler shares the trials between them. The alternative, a weight re-laid out inside the
  kernel, costs a pass over the weight per call (9.4 MB at 512 channels).

Block sizes come from the target's vector unit, never assumed (`vector_unit`: 16 fp32 lanes with
AVX-512, 8 with AVX2, 4 with NEON; `llvm_get_vector_width` answers 512 for every x86 CPU in 0.27,
so LLVM's feature query is used instead).

What it claims. Full kxk (any kernel, stride and padding), pointwise and depthwise (multiplier 1)
float32 convs whose output width has a divisor that fits a register tile. Grouped and dilated
convs, depthwise multipliers, other dtypes and odd shapes are not claimed: `unclaimed` says why,
and the caller falls back to MetaSchedule's default space and records that it did.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import tvm
from tvm import te

from pwbench.workloads.spec import ConvSpec

NCHW, NHWC, BLOCKED = "NCHW", "NHWC", "NCHWc"
MAX_TASKS = 4  # (ic_bn, oc_bn) pairs per layer: 2 x 2
STRUCTURE_KEY = "pwbench_structure"  # a block annotation: the structural choice, read back later


# ---- the target's vector unit --------------------------------------------------------------
def vector_unit(target: dict, dtype_bits: int = 32) -> tuple[int, int]:
    """(lanes, accumulators): fp32 lanes of the widest vector unit, and how many vector registers
    a register tile may take (two of 16 or four of 32 are left for the broadcast input and the
    weight vector). LLVM's feature query honours mcpu and mattr (haswell, znver3: avx2; znver4/5,
    skylake-avx512: avx512f; `"mattr": ["-avx512f"]` turns it off)."""
    from tvm.target import codegen

    t = tvm.target.Target(target)
    triple = str(t.attrs.get("mtriple", "")) or str(tvm.get_global_func("target.llvm_get_system_triple")())
    if triple.startswith(("aarch64", "arm64")):
        return 128 // dtype_bits, 28  # NEON: 32 registers of 128 bits (SVE is not handled)
    if bool(codegen.llvm_cpu_has_features(["avx512f"], t)):
        return 512 // dtype_bits, 28
    if bool(codegen.llvm_cpu_has_features(["avx"], t)):
        return 256 // dtype_bits, 14
    return 128 // dtype_bits, 14


# ---- what the space claims -----------------------------------------------------------------
def unclaimed(spec: ConvSpec, lanes: int, accumulators: int) -> str | None:
    """Why the structured space does not take this conv (the default space does), or None."""
    if spec.dilation != (1, 1):
        return "dilated convs are not in the structured space"
    if spec.kind == "grouped":
        return "grouped convs are not in the structured space"
    if spec.kind == "depthwise" and spec.out_channels != spec.in_channels:
        return "depthwise convs with a channel multiplier are not in the structured space"
    if spec.dtype != "float32":
        return f"{spec.dtype} convs are not in the structured space (float32 only)"
    if not _reg_choices(spec.out_hw[1], 1, accumulators, 2):
        return f"output width {spec.out_hw[1]} has no divisor that fits a register tile"
    channels = spec.out_channels
    if not _block_choices(channels, lanes):
        return f"{channels} channels have no block of at least half a vector ({lanes} lanes)"
    return None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _reg_choices(ow: int, vecs_per_col: int, accumulators: int, lo: int) -> list[int]:
    """Divisors of the output width usable as the tile width (lo..32 columns, within the
    accumulator registers); a narrow output falls back to its widest fitting divisor > 1."""
    fits = [d for d in _divisors(ow) if d * vecs_per_col <= accumulators]
    ok = [d for d in fits if lo <= d <= 32]
    if not ok and ow == 1:
        return [1]
    return ok or [d for d in fits if d > 1][-1:]


def _block_choices(c: int, lanes: int) -> list[int]:
    """Blocks of the vectorised channel: one and two vectors where they divide c; else multiples
    of 8 dividing c (24 on AVX-512); else c itself or its largest divisor up to 4 vectors, if
    that is at least half a vector. At most two, the best first."""
    ok = [m * lanes for m in (1, 2) if c % (m * lanes) == 0]
    if not ok:
        ok = [d for d in _divisors(c) if d % 8 == 0 and d <= 4 * lanes][::-1]
    if not ok:
        d = max(d for d in _divisors(c) if d <= 4 * lanes)
        ok = [d] if d >= min(c, lanes // 2) else []
    return ok[:2]


def _ic_choices(ic: int, lanes: int) -> list[int]:
    """Input-channel blocks (the reduction chunk): one and two vectors, 8 or 32, where they
    divide; else the whole channel range when it is small (ic = 3, 24); else its largest divisor
    up to 64. At most two."""
    ok = [b for b in dict.fromkeys((lanes, 2 * lanes, 8, 32)) if ic % b == 0]
    if not ok:
        ok = [ic] if ic <= 64 else [max(d for d in _divisors(ic) if d <= 64)]
    return ok[:2]


# ---- structural choices (one design space each) -----------------------------------------------
@dataclass(frozen=True)
class Structure:
    """A choice that changes the loop nest, not a number in it: each is its own design space."""
    unroll_kw: bool = False  # (ic_bn, kw) with kw unrolled, else (kw, ic_bn)
    store: str = "direct"  # direct: the tile's write-back stores into the output layout;
    #                       cols: NCHW output, stores along columns (vectorised over reg_n);
    #                       stage: NHWC output, the blocked tile unpacked in its own stage
    pack: str = "stage"  # stage: the padded, blocked input in its own parallel pass;
    #                      inline: read in place (no padding only)

    @property
    def text(self) -> str:
        return f"unroll_kw={int(self.unroll_kw)};store={self.store};pack={self.pack}"

    @classmethod
    def parse(cls, text: str) -> Structure:
        fields = dict(part.split("=") for part in text.split(";"))
        return cls(bool(int(fields["unroll_kw"])), fields["store"], fields["pack"])


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
    def name(self) -> str:
        return f"{self.spec.id}_{self.layout}_b{self.ic_bn}x{self.oc_bn}"

    @property
    def reg_choices(self) -> list[int]:
        vecs = -(-self.oc_bn // self.lanes)
        return _reg_choices(self.spec.out_hw[1], vecs, self.accumulators, 2 if self.depthwise else 4)

    @property
    def structures(self) -> list[Structure]:
        kw = self.spec.kernel_size[1]
        unroll = (False, True) if kw > 1 and not self.depthwise else (False,)
        store = {NCHW: ("direct", "cols"), NHWC: ("direct", "stage"), BLOCKED: ("direct",)}[self.layout]
        no_pad = self.spec.padding == (0, 0)
        pack = ("stage", "inline") if no_pad and self.layout != BLOCKED else ("stage",)
        return [Structure(u, s, p) for u, s, p in itertools.product(unroll, store, pack)]

    def func(self) -> tvm.tirx.PrimFunc:
        return (dw_func if self.depthwise else conv_func)(self.spec, self.ic_bn, self.oc_bn,
                                                           self.layout)


SPACES = ("structured", "default")


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
    lanes, accumulators = vector_unit(target)
    reason = unclaimed(spec, lanes, accumulators)
    return Plan("default", reason) if reason else Plan("structured", "", tuple(tasks(spec, target)))


def tasks(spec: ConvSpec, target: dict, layout: str | None = None) -> list[Task]:
    """The layer's tasks in its own layout (or `layout`), or [] when the space does not claim it."""
    lanes, accumulators = vector_unit(target)
    if unclaimed(spec, lanes, accumulators):
        return []
    layout = layout or spec.layout
    if spec.kind == "depthwise":
        pairs = [(b, b) for b in _block_choices(spec.in_channels, lanes)]
    else:
        pairs = list(itertools.product(_ic_choices(spec.in_channels, lanes),
                                       _block_choices(spec.out_channels, lanes)))
    return [Task(spec, layout, i, o, lanes, accumulators) for i, o in pairs[:MAX_TASKS]]


# ---- compute: one PrimFunc per (layout, ic_bn, oc_bn) ------------------------------------------
def _geometry(spec: ConvSpec):
    (kh, kw), (sh, sw), (ph, pw) = spec.kernel_size, spec.stride, spec.padding
    oh, ow = spec.out_hw
    return kh, kw, sh, sw, ph, pw, oh, ow, (oh - 1) * sh + kh, (ow - 1) * sw + kw


def _packed_input(spec: ConvSpec, bn: int, layout: str, dtype: str):
    """(data placeholder, data_pack): the input padded (only what is read) and blocked to
    (n, c/bn, Hp, Wp, bn); for an unpadded blocked input, the input itself."""
    n, c, h, w = spec.input_shape
    kh, kw, sh, sw, ph, pw, oh, ow, hp, wp = _geometry(spec)
    shape = {NCHW: (n, c, h, w), NHWC: (n, h, w, c), BLOCKED: (n, c // bn, h, w, bn)}[layout]
    data = te.placeholder(shape, dtype, name="data")
    if layout == BLOCKED and (ph, pw) == (0, 0):
        return data, data
    read = {NCHW: lambda b, q, y, x, i: data[b, q * bn + i, y, x],
            NHWC: lambda b, q, y, x, i: data[b, y, x, q * bn + i],
            BLOCKED: lambda b, q, y, x, i: data[b, q, y, x, i]}[layout]
    zero = tvm.tirx.const(0, dtype)

    def pack(b, q, y, x, i):
        inside = tvm.tirx.all(y >= ph, y < h + ph, x >= pw, x < w + pw)
        return tvm.tirx.if_then_else(inside, read(b, q, y - ph, x - pw, i), zero)

    return data, te.compute((n, c // bn, hp, wp, bn), pack, name="data_pack")


def _output(spec: ConvSpec, conv, bn: int, layout: str):
    n, oc, oh, ow = spec.output_shape
    if layout == BLOCKED:
        return conv
    if layout == NCHW:
        return te.compute((n, oc, oh, ow), lambda b, c, y, x: conv[b, c // bn, y, x, c % bn],
                          name="unpack")
    return te.compute((n, oh, ow, oc), lambda b, y, x, c: conv[b, c // bn, y, x, c % bn],
                      name="unpack")


def conv_func(spec: ConvSpec, ic_bn: int, oc_bn: int, layout: str) -> tvm.tirx.PrimFunc:
    """Full or pointwise conv: (data, packed weight, out), pack and unpack inside. Two channel
    reduce axes (chunk, in-block), so the body has no div/mod."""
    dtype = spec.dtype
    kh, kw, sh, sw, *_ = _geometry(spec)
    n, oc, oh, ow = spec.output_shape
    icc = spec.in_channels // ic_bn
    data, packed = _packed_input(spec, ic_bn, layout, dtype)
    kernel = te.placeholder((oc // oc_bn, icc, kh, kw, ic_bn, oc_bn), dtype, name="kernel")
    rc, ry = te.reduce_axis((0, icc), "rc"), te.reduce_axis((0, kh), "ry")
    rx, ri = te.reduce_axis((0, kw), "rx"), te.reduce_axis((0, ic_bn), "ri")
    conv = te.compute(
        (n, oc // oc_bn, oh, ow, oc_bn),
        lambda b, o, y, x, j: te.sum(
            packed[b, rc, y * sh + ry, x * sw + rx, ri] * kernel[o, rc, ry, rx, ri, j],
            axis=[rc, ry, rx, ri]), name="conv")
    out = _output(spec, conv, oc_bn, layout)
    return te.create_prim_func([data, kernel, out]).with_attr("global_symbol", "main")


def dw_func(spec: ConvSpec, bn: int, _oc_bn: int, layout: str) -> tvm.tirx.PrimFunc:
    """Depthwise conv (multiplier 1): (data, weight (C/bn, kh, kw, bn), out)."""
    dtype = spec.dtype
    kh, kw, sh, sw, *_ = _geometry(spec)
    n, c, oh, ow = spec.output_shape
    data, packed = _packed_input(spec, bn, layout, dtype)
    kernel = te.placeholder((c // bn, kh, kw, bn), dtype, name="kernel")
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    conv = te.compute(
        (n, c // bn, oh, ow, bn),
        lambda b, q, y, x, j: te.sum(
            packed[b, q, y * sh + ry, x * sw + rx, j] * kernel[q, ry, rx, j], axis=[ry, rx]),
        name="conv")
    out = _output(spec, conv, bn, layout)
    return te.create_prim_func([data, kernel, out]).with_attr("global_symbol", "main")


# ---- the schedule --------------------------------------------------------------------------
def _has(sch, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # noqa: BLE001 (s_tir raises ScheduleError subclasses)
        return False


def _shape(region) -> list[int]:
    """Shape of a block read/write region's buffer (0.27 calls it TensorRegion.source)."""
    buf = getattr(region, "buffer", None) or region.source
    return [int(d) for d in buf.shape]


def _schedule_pack(sch, pack: str) -> None:
    if not _has(sch, "data_pack"):
        return
    block = sch.get_sblock("data_pack")
    if pack == "inline":
        sch.compute_inline(block)
        return
    b, c, y, x, i = sch.get_loops(block)
    sch.parallel(sch.fuse(b, c, y))
    sch.vectorize(i)


def _tile_loops(sch, block, xo, extents) -> dict:
    """The loops compute_at(preserve_unit_loops=False) made under xo: one per block iter var of
    extent > 1, in iter-var order (spatial tile first, then the reductions)."""
    loops = sch.get_loops(block)
    below = loops[[sch.get(lp).same_as(sch.get(xo)) for lp in loops].index(True) + 1:]
    named = [tag for tag, ext in extents if ext > 1]
    assert len(below) == len(named), ([int(sch.get(lp).extent) for lp in below], extents)
    return {tag: None for tag, _ in extents} | dict(zip(named, below))


def apply(sch, task: Task, structure: Structure, reg_n) -> None:
    """The structure on a task's PrimFunc (a tvm.s_tir.Schedule, changed in place). reg_n is an
    int or the ExprRV of a sample_categorical (then replays follow new decisions). Order matters:
    parallel / vectorize / unroll on the reduction block's loops come before
    decompose_reduction (else "The reduction block vars are not used to index the output")."""
    conv = sch.get_sblock("conv")
    sch.annotate(conv, STRUCTURE_KEY, structure.text)
    kshape = _shape(sch.get(conv).reads[1])
    _schedule_pack(sch, structure.pack)
    wb = sch.cache_write(conv, 0, "local")  # the write-back block: register tile -> output
    unpack = _has(sch, "unpack")
    if unpack:
        _as_blocked(sch, task)
        if structure.store != "stage":
            sch.reverse_compute_inline(sch.get_sblock("unpack"))
    b, o, y, x, j = sch.get_loops(wb)
    xo, xi = sch.split(x, factors=[None, reg_n])
    fused = sch.fuse(b, o, y)
    sch.parallel(fused)
    if structure.store == "cols":
        sch.reorder(j, xi)
        sch.vectorize(xi)
    else:
        sch.unroll(xi)
        sch.vectorize(j)
    sch.compute_at(conv, xo, preserve_unit_loops=False)
    if unpack and structure.store == "stage":
        b, o, y, x, c = sch.get_loops(sch.get_sblock("unpack"))
        sch.parallel(sch.fuse(b, o, y))
        sch.vectorize(c)
    reg_int = int(sch.get(reg_n)) if not isinstance(reg_n, int) else reg_n
    if task.depthwise:
        kh, kw = kshape[1], kshape[2]
        t = _tile_loops(sch, conv, xo, [("x", reg_int), ("j", task.oc_bn), ("ry", kh), ("rx", kw)])
        tags, unrolled = ["ry", "rx", "x", "j"], ("x", "ry", "rx")
    else:
        icc, kh, kw = kshape[1], kshape[2], kshape[3]
        t = _tile_loops(sch, conv, xo, [("x", reg_int), ("j", task.oc_bn), ("rc", icc),
                                        ("ry", kh), ("rx", kw), ("ri", task.ic_bn)])
        tags = (["rc", "ry", "ri", "rx", "x", "j"] if structure.unroll_kw else
                ["rc", "ry", "rx", "ri", "x", "j"])
        unrolled = ("x", "rx") if structure.unroll_kw else ("x",)
    order = [t[k] for k in tags if t[k] is not None]
    if len(order) > 1:
        sch.reorder(*order)
    if t["j"] is not None:
        sch.vectorize(t["j"])
    for k in unrolled:
        if t[k] is not None:
            sch.unroll(t[k])
    first_reduction = next((t[k] for k in tags if k.startswith("r") and t[k] is not None), None)
    if first_reduction is not None:
        init = sch.decompose_reduction(conv, first_reduction)
        if task.oc_bn > 1:
            sch.vectorize(sch.get_loops(init)[-1])


def _as_blocked(sch, task: Task) -> None:
    """Give the unpack block the conv's 5-d iteration space (n, chunk, row, col, block), so its
    loops line up with the write-back's (for inlining into it, or a stage of its own)."""
    bn = task.oc_bn
    block = sch.get_sblock("unpack")
    if task.layout == NCHW:
        sch.transform_block_layout(block, lambda b, c, y, x: (b, c // bn, y, x, c % bn))
    else:
        sch.transform_block_layout(block, lambda b, y, x, c: (b, c // bn, y, x, c % bn))


def fixed(task: Task, structure: Structure, reg_n: int):
    """The task scheduled with given knobs, without MetaSchedule (the blocked variant of a tuned
    kernel, and tests)."""
    sch = tvm.s_tir.Schedule(task.func())
    apply(sch, task, structure, sch.sample_categorical([reg_n], [1.0]))  # one choice: knobs() reads it
    return sch


def knobs(schedule) -> tuple[Structure, int]:
    """The structure and tile width a (tuned) schedule of this space was built with."""
    structure, reg_n = None, None
    for inst in schedule.trace.insts:
        if inst.kind.name == "Annotate" and str(inst.attrs[0]) == STRUCTURE_KEY:
            structure = Structure.parse(str(inst.inputs[1]).strip('"'))
        if inst.kind.name == "SampleCategorical":
            reg_n = int(inst.attrs[0][int(schedule.trace.get_decision(inst))])
    if structure is None or reg_n is None:
        raise ValueError("not a schedule of the structured space")
    return structure, reg_n


# ---- MetaSchedule -------------------------------------------------------------------------
def space_fn(task: Task):
    """A ScheduleFn body: one schedule per structure, each drawing reg_n as the split factor."""
    choices = task.reg_choices

    def fn(sch):
        out = []
        for structure in task.structures:
            s = sch.copy()
            rv = s.sample_categorical(choices, [1.0 / len(choices)] * len(choices))
            apply(s, task, structure, rv)
            out.append(s)
        return out

    return fn


def space(task: Task, ms):
    """The task's design space as a MetaSchedule space generator (`ms`: the meta_schedule
    module): no schedule rules or postprocessors (the structure is complete), our mutator."""
    return ms.space_generator.ScheduleFn(space_fn(task), sch_rules=[], postprocs=[],
                                         mutator_probs={mutate_categorical(ms): 1.0})


def mutate_categorical(ms, seed: int = 0):
    """A PyMutator that re-draws one SampleCategorical decision of a trace."""
    from tvm.ir.utils import derived_object

    @derived_object
    class MutateCategorical(ms.mutator.PyMutator):
        def __init__(self, seed_: int = 0):
            super().__init__()
            self.rng = random.Random(seed_)

        def _initialize_with_tune_context(self, context) -> None:
            pass

        def apply(self, trace, _rand_state):
            candidates = [inst for inst in trace.insts if inst.kind.name == "SampleCategorical"
                          and len(inst.attrs[0]) > 1]
            if not candidates:
                return None
            inst = self.rng.choice(candidates)
            old = int(trace.get_decision(inst))
            new = self.rng.choice([i for i in range(len(inst.attrs[0])) if i != old])
            return trace.with_decision(inst, new, remove_postproc=True)

        def clone(self):
            return MutateCategorical(self.rng.randrange(1 << 30))

    return MutateCategorical(seed)
