"""Timing: warm-up and sampling budgets in milliseconds, an adaptive inner loop, raw samples kept.

The kernel brings its clock (host perf_counter, CUDA events, TVM's time_evaluator); this module
only decides how many calls to time and for how long. Like torch.utils.benchmark's
blocked_autorange, a hot-cache sample times a block of `number` back-to-back calls, `number` grown
until one block lasts at least `min_block_s`, so the timer's own overhead is far below 1 % of what
is measured. Each sample is block time / number, in seconds.

Cold cache: before every sample the target evicts its caches (not timed), and each sample is one
call, since a second call would find the operands the first one brought back into cache. A clock
that can keep the host's dispatch out of a cold sample (`time_cold`: CUDA events behind a held
stream) is asked to.

Launch-bound: a device clock also says how long the host took to enqueue each block
(`enqueue_s`). When the host needs LAUNCH_BOUND (0.8) or more of the GPU time per call, the GPU
waited for the host between calls and the sample times the dispatch, not the kernel: the row's
`launch_bound` flag, with `host_enqueue_s` (median per call) beside it. CUDA-graph replay
(`--cuda-graphs`, measure/clocks.py) takes the dispatch out of a hot block.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from pwbench import samples

CACHE_STATES = ("hot", "cold")
LAUNCH_BOUND = 0.8  # host enqueue time per call / GPU time per call at which a row is flagged


@dataclass(frozen=True)
class Budget:
    warmup_ms: float = 50.0
    sample_ms: float = 400.0
    min_block_s: float = 1e-3
    min_samples: int = 7
    max_samples: int = 1000


@dataclass
class Measurement:
    samples_s: list[float]
    number: int  # calls per sample
    clock: str = "host"
    notes: list[str] = field(default_factory=list)
    enqueue_s: list[float] = field(default_factory=list)  # host seconds per call to enqueue it
    clock_columns: dict = field(default_factory=dict)  # what the clock found out (a cold hold)

    def __post_init__(self):
        self._stats = samples.summary(self.samples_s)

    @property
    def median_s(self) -> float:
        return self._stats["median_s"]

    @property
    def min_s(self) -> float:
        return self._stats["min_s"]

    @property
    def iqr_s(self) -> float:
        return self._stats["iqr_s"]

    @property
    def noisy(self) -> bool:
        return self._stats["noisy"]

    def columns(self) -> dict:
        """host_enqueue_s and launch_bound where the clock reports enqueue times, and the
        clock's own columns."""
        if not self.enqueue_s:
            return dict(self.clock_columns)
        enqueue = statistics.median(self.enqueue_s)
        return {"host_enqueue_s": enqueue, "launch_bound": bool(enqueue >= LAUNCH_BOUND * self.median_s),
                **self.clock_columns}


def measure(clock, budget: Budget = Budget(), evict: Callable[[], object] | None = None,
            warmed: Callable[[], object] = lambda: None) -> Measurement:
    """Time a kernel with its clock: hot, or cold when `evict` is given. `warmed` is called
    between the warm-up and the first sample (e.g. to read a GPU's clocks once they settled)."""
    wall = time.perf_counter
    deadline = wall() + budget.warmup_ms / 1e3
    clock.time(1)
    while wall() < deadline:
        clock.time(1)
    warmed()
    number = 1
    if evict is None:
        while (elapsed := clock.time(number)) < budget.min_block_s:
            number *= max(2, min(10, int(budget.min_block_s / max(elapsed, 1e-9))))
    taken, enqueued = [], []
    cold = getattr(clock, "time_cold", None) or (lambda: clock.time(1))
    deadline = wall() + budget.sample_ms / 1e3
    while len(taken) < budget.max_samples and (
            len(taken) < budget.min_samples or wall() < deadline):
        if evict is not None:
            evict()
            taken.append(cold())
        else:
            taken.append(clock.time(number) / number)
        if not math.isnan(getattr(clock, "enqueue_s", math.nan)):
            enqueued.append(clock.enqueue_s / number)
    columns = getattr(clock, "columns", dict)()
    return Measurement(taken, number, getattr(clock, "name", "host"), enqueue_s=enqueued,
                       clock_columns=columns)
