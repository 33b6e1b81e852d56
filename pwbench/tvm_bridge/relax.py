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
"""

from __future__ import annotations

import tvm
from tvm import relax

from pwbench.tvm_bridge import metaschedule
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


def fuse(mod, target: dict):
    """Legalized and fused: the module MetaSchedule tunes and its database is applied to."""
    passes = tvm.transform.Sequential([
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()])
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


def key(workload) -> str:
    """A workload's key in a tuning database's layers.json when tuned through Relax (the same
    conv is a different PrimFunc there than tvm-tuned's, so one record must not stand for the
    other)."""
    return f"relax:{workload.id}"


def job(fused, target: dict, workload) -> Job:
    """The workload's tuning job: each fused PrimFunc a task of MetaSchedule's default space,
    weighted by how often it occurs, its trials counted per task."""
    ms = metaschedule.meta_schedule()
    tasks = ms.relax_integration.extract_tasks(fused, tvm.target.Target(target))
    if not tasks:
        raise RuntimeError("MetaSchedule found no task to tune in the fused module")
    name = key(workload)
    return Job(name, [TaskDef(name, t.task_name, t.dispatched[0], "post-order-apply",
                              "evolutionary", float(t.weight)) for t in tasks], per_task=True)
