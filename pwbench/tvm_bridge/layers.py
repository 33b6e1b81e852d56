"""Single conv layers tuned by MetaSchedule (the `tvm-tuned` backend and `pwbench tune`): the
design space a layer is tuned in on a toolchain, its tuning job, and its best kernel from a
database, as a schedule and the layout its artifact takes.

Spaces (`--space`): `structured` (tvm_bridge/spaces: on every CPU target, this machine's, a
board's or the instruction clock's, at the target's vector width) or MetaSchedule's `default`
space over TOPI's compute (asked for, a GPU, or a layer the structured space does not claim:
the plan says why). Record keys: the spec id for the default space (as databases made before the
structured space), `<spec id>@structured` otherwise.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import tvm

from pwbench.tvm_bridge import layouts, spaces, topi_conv, tuner
from pwbench.tvm_bridge.database import Database, LayerRecord
from pwbench.tvm_bridge.tuner import TaskDef
from pwbench.tvm_bridge.tuning import Job
from pwbench.workloads.spec import ConvSpec


def record_key(spec: ConvSpec, space: str) -> str:
    return spec.id if space == "default" else f"{spec.id}@{space}"


def plan(spec: ConvSpec, toolchain, space: str) -> spaces.Plan:
    """The space a layer is tuned in on this toolchain (a fallback says why)."""
    if space == "structured" and not toolchain.structured:
        return spaces.Plan("default", "the structured space is for CPUs")
    return spaces.plan(spec, toolchain.target, space)


def job(spec: ConvSpec, layer_plan: spaces.Plan, warm: str = "") -> Job:
    """The layer's tuning job: its tasks, weighted by how often the layer occurs in its network.
    `warm`: a shipped schedule's knobs (warm.py), whose task goes first and whose point its task
    measures first."""
    key = record_key(spec, layer_plan.space)
    if layer_plan.space == "default":
        return Job(key, [TaskDef(key, spec.id, _module(topi_conv.primfunc(spec)), "post-order-apply",
                                 "evolutionary", float(spec.count))])
    tasks = sorted(layer_plan.tasks, key=lambda t: not warm.startswith(_blocks_text(t)))
    return Job(key, [TaskDef(key, t.name, _module(t.func()), functools.partial(spaces.space, t),
                             "enumerate", float(spec.count),
                             first=functools.partial(_is_point, t, warm) if warm else None)
                     for t in tasks])


def _blocks_text(task: spaces.Task) -> str:
    return f"ic_bn={task.ic_bn};oc_bn={task.oc_bn};"


def _is_point(task: spaces.Task, text: str, schedule) -> bool:
    return knobs_text(task, schedule) == text


@dataclass
class Outcome:
    spec: ConvSpec
    source: str  # "database", "tuned" (now), or "untuned" (the budget ran out before a trial)
    record: LayerRecord
    schedule: object
    plan: spaces.Plan
    task: spaces.Task | None = None  # structured: the (ic_bn, oc_bn) task that won

    @property
    def layout(self):
        """The buffers of the kernel built from this schedule (layouts.Plain or Packed)."""
        return self.task.packing if self.task else layouts.Plain(self.spec)


def best(spec: ConvSpec, db: Database, layer_plan: spaces.Plan, source: str = "database") -> Outcome:
    """The best schedule the database holds for the layer in its plan's space. A structured
    layer the budget never reached gets its space's first point, untuned (said in the row); a
    default-space layer without a record is an error naming why."""
    record = db.record(record_key(spec, layer_plan.space)) or LayerRecord()
    if layer_plan.space == "default":
        mod = _module(topi_conv.primfunc(spec))
        found = _best_with_intrinsics(db, [mod])
        if found is None:
            raise RuntimeError(f"tuning database {db.dir} holds no valid schedule for {spec.id}")
        return Outcome(spec, source, record, found[1], layer_plan)
    tasks = layer_plan.tasks
    found = tuner.best(db.tvm(), [_module(t.func()) for t in tasks])
    if found is None:
        task = tasks[0]
        schedule = spaces.fixed(task, task.structures[0], task.reg_choices[0])
        return Outcome(spec, "untuned", record, schedule, layer_plan, task)
    return Outcome(spec, source, record, found[1], layer_plan, tasks[found[0]])


def _best_with_intrinsics(db: Database, mods: list):
    try:
        return tuner.best(db.tvm(), mods)
    except Exception:  # a tensor-core trace needs the CUDA tensor intrinsics (a minute to load)
        importlib.import_module("tvm.s_tir.tensor_intrin.cuda")
        return tuner.best(db.tvm(), mods)


def blocked(outcome: Outcome):
    """(the blocked task, the schedule with the tuned knobs on it): NCHW[ic_bn]c in and
    NCHW[oc_bn]c out, the same tile and blocks, no tuning of its own."""
    structure, reg_n = spaces.knobs(outcome.schedule)
    t = outcome.task
    task = spaces.Task(t.spec, spaces.BLOCKED, t.ic_bn, t.oc_bn, t.lanes, t.accumulators)
    structure = spaces.Structure(structure.unroll_kw, "direct", "stage")
    return task, spaces.fixed(task, structure, reg_n)


def knobs_text(task: spaces.Task, schedule) -> str:
    structure, reg_n = spaces.knobs(schedule)
    return f"ic_bn={task.ic_bn};oc_bn={task.oc_bn};reg_n={reg_n};{structure.text}"


def _module(func):
    return tvm.IRModule({"main": func})


def time_here(schedule, toolchain, repeat: int = 10, min_repeat_ms: int = 20) -> float:
    """The fastest of `repeat` time_evaluator samples of a schedule compiled by a toolchain of this
    machine, on random arguments (scripts compare tuning settings by the kernel they find)."""
    import numpy as np

    executable = toolchain.compile(schedule.mod).executable
    device = tvm.cpu()
    args = [tvm.runtime.tensor(np.random.rand(*[int(d) for d in p.shape]).astype(str(p.dtype)), device)
            for p in schedule.mod["main"].params]
    timer = executable.mod.time_evaluator("main", device, number=1, repeat=repeat,
                                          min_repeat_ms=min_repeat_ms)
    return float(min(timer(*args).results))
