"""A search strategy for small design spaces: every point, in the order a cost model ranks them.

The structured spaces (tvm_bridge/spaces) have 8-100 points per task, whose only decisions are
sample_categorical. MetaSchedule's evolutionary search spends seconds per batch on such a space
mutating and re-sampling points it has already measured (on 2 cores, 2.5 s for each of many
empty batches), and never says it is done; `enumeration` measures each point once and ends.
"""

from __future__ import annotations

import itertools

import numpy as np
import tvm


def _replay(mod, trace):
    schedule = tvm.s_tir.Schedule(mod)
    trace.apply_to_schedule(schedule, remove_postproc=True)
    return schedule


MAX_POINTS = 1024  # an enumerated space larger than this is cut (the structured spaces: < 100)


def enumeration(ms, model, batch: int, stop=lambda: False, first=None):
    """A search strategy for small spaces whose only decisions are sample_categorical (the
    structured spaces): every point of every design space, unmeasured ones only, measured in the
    order the cost model ranks them once it has learnt (`model`: the session's XGBModel, shared
    by every task of a suite); before that, a prior: the points `first(schedule)` picks (a
    warm start's shipped schedule), then one point of each design space in turn, the widest
    register tile first. Returns None (the task is done) when the space is exhausted."""
    from tvm.ir.utils import derived_object

    @derived_object
    class Enumerate(ms.search_strategy.PySearchStrategy):
        def _initialize_with_tune_context(self, context) -> None:
            self.context = context

        def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None,
                       cost_model=None) -> None:
            mod = self.context.mod
            self.left, self.cost_model = max_trials, cost_model
            self.args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
            measured = set()
            if database is not None and database.has_workload(mod):
                for record in database.get_top_k(database.commit_workload(mod), MAX_POINTS):
                    measured.add(_key(_replay(mod, record.trace)))
            points = []
            for space in design_spaces:
                points.append([p for p in _points(mod, space.trace) if _key(p) not in measured])
            # the prior: interleave the design spaces, each from its widest tile
            todo = [p for group in itertools.zip_longest(*points) for p in group if p is not None]
            picked = [p for p in todo if first is not None and first(p)]
            self.todo = picked + [p for p in todo if not any(p is q for q in picked)]

        def post_tuning(self) -> None:
            self.todo = []

        def generate_measure_candidates(self):
            n = min(batch, self.left, len(self.todo))
            if n <= 0 or stop():
                return None
            if _trained(model):
                candidates = [ms.search_strategy.MeasureCandidate(s, self.args) for s in self.todo]
                scores = np.asarray(self.cost_model.predict(self.context, candidates))
                order = np.argsort(-scores, kind="stable")
                self.todo = [self.todo[i] for i in order]
            chosen, self.todo = self.todo[:n], self.todo[n:]
            self.left -= n
            return [ms.search_strategy.MeasureCandidate(s, self.args) for s in chosen]

        def notify_runner_results(self, measure_candidates, results) -> None:
            pass

        def clone(self):
            return Enumerate()

    return Enumerate()


def _trained(model) -> bool:
    return (getattr(model, "booster", None) is not None
            and model.data_size >= model.num_warmup_samples)


def _points(mod, trace) -> list:
    """Every schedule a trace gives over its sample_categorical decisions (last choice first)."""
    insts = [i for i in trace.insts if i.kind.name == "SampleCategorical"]
    ranges = [range(len(i.attrs[0]) - 1, -1, -1) for i in insts]
    out = []
    for decisions in itertools.islice(itertools.product(*ranges), MAX_POINTS):
        t = trace
        for inst, d in zip(insts, decisions):
            t = t.with_decision(inst, d, remove_postproc=True)
        out.append(_replay(mod, t))
    return out


def _key(schedule) -> int:
    import tvm_ffi

    return tvm_ffi.structural_hash(schedule.mod)
