"""Timing: warm-up and sampling budgets in milliseconds, an adaptive inner loop, raw samples kept.

The kernel brings its clock (host perf_counter, CUDA events, TVM's time_evaluator); this module
only decides how many calls to time and for how long. Like torch.utils.benchmark's
blocked_autorange, a hot-cache sample times a block of `number` back-to-back calls, `number` grown
until one block lasts at least `min_block_s`, so the timer's own overhead is far below 1 % of what
is measured. Each sample is block time / number, in seconds.

Cold cache: before every sample the target evicts its caches (not timed), and each sample is one
call, since a second call would find the operands the first one brought back into cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from pwbench import samples

CACHE_STATES = ("hot", "cold")


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
    taken = []
    deadline = wall() + budget.sample_ms / 1e3
    while len(taken) < budget.max_samples and (
            len(taken) < budget.min_samples or wall() < deadline):
        if evict is not None:
            evict()
        taken.append(clock.time(number) / number)
    return Measurement(taken, number, getattr(clock, "name", "host"))
