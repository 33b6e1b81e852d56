"""TVM Relax: a workload's ONNX export as a whole-graph program, compiled untuned or tuned by
MetaSchedule (apache-tvm 0.27). Running the exported library is runtime.py's job.

Untuned: `from_onnx`, then `tvm.compile` with its default pipeline, which on
an llvm target legalizes every Relax operator into its TOPI loop nest and stops there: no
operator fusion (FuseOps is not in the CPU default pipeline), no schedule, no DLight rule (DLight
CPU has only GEMV and reduction rules, none matches a conv). Each conv, bias add, activation and
add is its own serial loop nest, one thread.

Tuned (`fuse`, `job`, `compile_tuned`): MetaSchedule extracts tasks only from `call_tir`
PrimFuncs, and `from_onnx` gives high-level `R.nn.conv2d` calls, so on that module
`extract_tasks` finds nothing ("No tasks to tune"). The module is first legalized and fused
(LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR: the front of
`relax.get_pipeline("zero")`), each fused PrimFunc (e.g. conv2d + bias + ReLU6) is a task, and the
database is applied to that very fused module, whose PrimFuncs are its keys (applied before
fusion it would find none). Records live in the same kind of database as single layers (one per
target fingerprint, tvm_bridge/database.py); a fused PrimFunc's record does not depend on the
weights' values, which are its arguments.

Structured convs (`structure`, before fusion): on a CPU target, each conv of a block that the
structured space claims (tvm_bridge/spaces) becomes a call of that space's compute (its first
channel-block pair, the weight pre-packed into a constant of the program), marked fusable with
what follows (op_pattern kOutEWiseFusable), so FuseOps and FuseTIR give one PrimFunc of the
conv and its activation or residual add. Its task is tuned in the structured space, whose
schedule computes those elementwise operators where the output is stored; the other fused
PrimFuncs are tuned in MetaSchedule's default space.
"""

from __future__ import annotations

import functools
import re

import tvm
from tvm import relax

from pwbench.tvm_bridge import metaschedule, spaces
from pwbench.tvm_bridge.tuner import TaskDef
from pwbench.tvm_bridge.tuning import Job
from pwbench.workloads.spec import ConvSpec


def import_onnx(model: bytes, workload):
    """The Relax module of a workload's ONNX export. A block's weights become constants in the
    module (they are the block's); a conv's weight stays a parameter of `main` after the input,
    so that its kernel is called with the weight it is loaded with."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    weights_as_inputs = isinstance(workload, ConvSpec)
    mod = from_onnx(onnx.load_from_string(model), shape_dict={"x": list(workload.input_shape)},
                    dtype_dict="float32", keep_params_in_input=weights_as_inputs)
    if weights_as_inputs:
        mod, _ = relax.frontend.detach_params(mod)  # main(x, weight); the zero weight dropped
    return mod


STRUCTURED = "pwbench_structured_conv"  # the name of a structured conv's PrimFunc: + its index
FUSABLE = 4  # relax OpPatternKind kOutEWiseFusable: elementwise consumers may fuse into it


def structure(mod, target: dict) -> tuple[object, dict]:
    """(module, {PrimFunc name: spaces.Task}): every conv of `main` with a constant weight that the
    structured space claims, called as that space's compute (see the module docstring)."""
    mutator = _Structured(mod, target)
    main = mutator.visit_expr(mod["main"])
    mutator.builder_.update_func(mod.get_global_var("main"), main)
    return mutator.builder_.get(), mutator.tasks


@relax.expr_functor.mutator
class _Structured(relax.PyExprMutator):
    def __init__(self, mod, target: dict):
        super().__init__(mod)
        self.target, self.tasks = target, {}

    def visit_call_(self, call):
        call = super().visit_call_(call)
        spec = _conv_spec(call)
        tasks = spaces.tasks(spec, self.target) if spec else []
        if not tasks:
            return call
        task, name = tasks[0], f"{STRUCTURED}{len(self.tasks)}"
        func = task.func(index64=True).without_attr("global_symbol").with_attr("op_pattern", FUSABLE)
        self.tasks[name] = task
        packed = task.packing.pack_weight(call.args[1].value.numpy())
        return relax.call_tir(self.builder_.add_func(func, name),
                              [call.args[0], relax.const(packed)], call.ty)


def _conv_spec(call) -> ConvSpec | None:
    """The ConvSpec of a Relax NCHW/OIHW conv2d with a constant weight and symmetric padding."""
    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d"
            and isinstance(call.args[1], tvm.ir.expr.Constant)):
        return None
    a = call.attrs
    top, left, bottom, right = (int(p) for p in a.padding)
    if (top, left) != (bottom, right) or (a.data_layout, a.kernel_layout) != ("NCHW", "OIHW"):
        return None
    n, c, h, w = (int(v) for v in call.args[0].ty.shape)
    o, _, kh, kw = (int(v) for v in call.args[1].ty.shape)
    return ConvSpec(n, c, o, h, w, (kh, kw), tuple(int(v) for v in a.strides), (top, left),
                    tuple(int(v) for v in a.dilation), int(a.groups))


def fuse(mod, target: dict):
    """Legalized and fused: the module MetaSchedule tunes and its database is applied to."""
    passes = tvm.transform.Sequential([
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination()])
    with tvm.target.Target(target), tvm.transform.PassContext(opt_level=3):
        return passes(mod)


def primfuncs(mod) -> list[tuple[str, bool]]:
    """(name, scheduled) of every PrimFunc of a module."""
    out = []
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            attrs = func.attrs or {}
            out.append((gv.name_hint, bool(attrs.get("tirx.is_scheduled", False))))
    return out


def compile_tuned(fused, toolchain, database) -> tuple:
    """(compiled, PrimFuncs scheduled from the database, all PrimFuncs). A PrimFunc the database
    holds no record for stays an untuned loop nest (it is counted, not hidden)."""
    with tvm.target.Target(toolchain.target), tvm.transform.PassContext(opt_level=3), database:
        tuned = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)
    funcs = primfuncs(tuned)
    return toolchain.compile(tuned), sum(s for _, s in funcs), len(funcs)


def key(workload, structured: bool = False) -> str:
    """A workload's key in a tuning database's layers.json when tuned through Relax (the same
    conv is a different PrimFunc there than tvm-tuned's, so one record must not stand for the
    other), `@structured` when its convs are the structured space's."""
    return f"relax:{workload.id}" + ("@structured" if structured else "")


def job(fused, target: dict, workload, structured: dict | None = None) -> Job:
    """The workload's tuning job: each fused PrimFunc a task, weighted by how often it occurs,
    its trials counted per task; a fused structured conv (`structure`'s tasks, by name) in the
    structured space, the others in MetaSchedule's default space."""
    ms = metaschedule.meta_schedule()
    tasks = ms.relax_integration.extract_tasks(fused, tvm.target.Target(target))
    if not tasks:
        raise RuntimeError("MetaSchedule found no task to tune in the fused module")
    name, structured = key(workload, bool(structured)), structured or {}
    defs = []
    for t in tasks:
        found = re.search(f"{STRUCTURED}\\d+", t.task_name)
        space = (functools.partial(spaces.space, structured[found.group(0)])
                 if found and found.group(0) in structured else "post-order-apply")
        defs.append(TaskDef(name, t.task_name, t.dispatched[0], space,
                            "evolutionary" if space == "post-order-apply" else "enumerate",
                            float(t.weight)))
    return Job(name, defs, per_task=True)
