"""The structure as an s_tir schedule, its knobs, and the MetaSchedule design space around it.

What MetaSchedule draws, and how. MetaSchedule never re-runs a schedule function: it replays the
recorded trace with new decisions, so a knob that steers Python control flow is frozen at its
first draw. Hence
- reg_n is a `sample_categorical` whose random variable *is* the split factor, so a replayed
  or mutated decision changes the tile (a factor that does not divide the output width leaves a
  tail: the split's predicate, which TVM's loop partitioning peels off the last column chunk);
- each structural choice (unroll kw or not, how the tile is stored, whether the input is packed
  in a stage or read in place) is its own design space: the ScheduleFn returns one schedule per
  choice, and the search samples them all;
- no mutator of TVM 0.27 changes a plain `sample_categorical` (MutateTileSize, MutateUnroll,
  MutateParallel, MutateComputeLocation only touch their own instructions), so the space brings
  `MutateCategorical`, which re-draws one of them;
- the channel blocks ic_bn and oc_bn change the packed weight's shape, so each (ic_bn, oc_bn)
  is its own task (a PrimFunc with its own buffers), and the task scheduler shares the trials
  between them. The alternative, a weight re-laid out inside the kernel, costs a pass over the
  weight per call (9.4 MB at 512 channels).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import tvm

from pwbench.tvm_bridge.layouts import NCHW

STRUCTURE_KEY = "pwbench_structure"  # a block annotation: the structural choice, read back later


@dataclass(frozen=True)
class Structure:
    """A choice that changes the loop nest, not a number in it: each is its own design space."""
    unroll_kw: bool = False  # (ic_bn, kw) with kw unrolled, else (kw, ic_bn)
    store: str = "direct"  # direct: the tile's write-back stores into the output layout;
    #                       cols: NCHW output, stores along columns (vectorised over reg_n);
    #                       stage: the blocked tile unpacked in its own stage
    pack: str = "stage"  # stage: the padded, blocked input in its own parallel pass;
    #                      inline: read in place (no padding only)

    @property
    def text(self) -> str:
        return f"unroll_kw={int(self.unroll_kw)};store={self.store};pack={self.pack}"

    @classmethod
    def parse(cls, text: str) -> Structure:
        fields = dict(part.split("=") for part in text.split(";"))
        return cls(bool(int(fields["unroll_kw"])), fields["store"], fields["pack"])


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


def _write_back(sch, task, structure: Structure, reg_n):
    """The write-back block (register tile -> output), its column-chunk loop xo, and the loops
    laid out: rows fused and parallel, the tile's columns unrolled and its channels vectorised
    (or, for `cols`, the columns vectorised). A cropped output (padded channels) or a `stage`
    store unpacks in a stage of its own, after the write-back."""
    conv = sch.get_sblock("conv")
    wb = sch.cache_write(conv, 0, "local")
    staged = False
    if _has(sch, "unpack"):
        padded = task.oc_padded != task.spec.out_channels
        staged = structure.store == "stage" or padded
        if not padded:  # (a cropped unpack has no 5-d iteration space to take)
            _as_blocked(sch, task)
        if not staged:
            sch.reverse_compute_inline(sch.get_sblock("unpack"))
        _inline_epilogue(sch, sch.get_sblock("unpack") if staged else wb)
    b, o, y, x, j = sch.get_loops(wb)
    xo, xi = sch.split(x, factors=[None, reg_n])
    sch.parallel(sch.fuse(b, o, y))
    if structure.store == "cols":
        sch.reorder(j, xi)
        sch.vectorize(xi)
    else:
        sch.unroll(xi)
        sch.vectorize(j)
    sch.compute_at(conv, xo, preserve_unit_loops=False)
    if staged:
        _schedule_unpack(sch, task)
    return conv, xo


def _schedule_unpack(sch, task) -> None:
    """The unpack stage: rows in parallel, its innermost loop vectorised one vector at a time
    (the channel block, or for a cropped output a split of its last loop: a vector of the
    whole channel range, 1024 lanes, takes LLVM minutes to compile)."""
    loops = sch.get_loops(sch.get_sblock("unpack"))
    sch.parallel(sch.fuse(*loops[:3]))
    inner = loops[-1]
    if int(sch.get(inner).extent) > task.lanes:
        _, inner = sch.split(inner, factors=[None, task.lanes])
    sch.vectorize(inner)


def _inline_epilogue(sch, block) -> None:
    """Elementwise operators after the conv (an activation, a residual add: what Relax's FuseOps
    fused into the conv's PrimFunc) computed where the output is stored, not in a pass of their
    own. One that cannot be (SE's gate, broadcast over a larger output) stays a loop after it:
    s_tir checks before it changes anything, so a refused inlining leaves the schedule as it was
    and records nothing in the trace."""
    while consumers := sch.get_consumers(block):
        try:
            for consumer in consumers:
                sch.reverse_compute_inline(consumer)
        except Exception:  # noqa: BLE001 - s_tir raises ScheduleError subclasses
            return


def apply(sch, task, structure: Structure, reg_n) -> None:
    """The structure on a task's PrimFunc (a tvm.s_tir.Schedule, changed in place). reg_n is an
    int or the ExprRV of a sample_categorical (then replays follow new decisions). Order matters:
    parallel / vectorize / unroll on the reduction block's loops come before
    decompose_reduction (else "The reduction block vars are not used to index the output")."""
    conv = sch.get_sblock("conv")
    sch.annotate(conv, STRUCTURE_KEY, structure.text)
    kshape = _shape(sch.get(conv).reads[1])
    _schedule_pack(sch, structure.pack)
    conv, xo = _write_back(sch, task, structure, reg_n)
    reg_int = int(sch.get(reg_n)) if not isinstance(reg_n, int) else reg_n
    if task.depthwise:
        t = _tile_loops(sch, conv, xo, [("x", reg_int), ("j", task.oc_bn), ("ry", kshape[1]),
                                        ("rx", kshape[2])])
        tags, unrolled = ["ry", "rx", "x", "j"], ("x", "ry", "rx")
    else:
        t = _tile_loops(sch, conv, xo, [("x", reg_int), ("j", task.oc_bn), ("rc", kshape[1]),
                                        ("ry", kshape[2]), ("rx", kshape[3]), ("ri", task.ic_bn)])
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


def _as_blocked(sch, task) -> None:
    """Give the unpack block the conv's 5-d iteration space (n, chunk, row, col, block), so its
    loops line up with the write-back's, for inlining into it."""
    bn = task.oc_bn
    block = sch.get_sblock("unpack")
    if task.layout == NCHW:
        sch.transform_block_layout(block, lambda b, c, y, x: (b, c // bn, y, x, c % bn))
    else:
        sch.transform_block_layout(block, lambda b, y, x, c: (b, c // bn, y, x, c % bn))


def fixed(task, structure: Structure, reg_n: int):
    """The task scheduled with given knobs, without MetaSchedule (the blocked variant of a tuned
    kernel, a first point when no trial was measured, and tests)."""
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
def space_fn(task):
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


def space(task, ms):
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
