"""Timing: warm-up and sampling budgets in milliseconds, an adaptive inner loop, raw samples kept.

Like torch.utils.benchmark's blocked_autorange: a sample times a block of `number` back-to-back
calls, `number` grown until one block lasts at least `min_block_s`, so the timer's own overhead is
far below 1 % of what is measured. Each sample is block time / number, in seconds.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

NOISY_IQR_FRACTION = 0.10


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
    threads: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def min_s(self) -> float:
        return min(self.samples_s)

    @property
    def iqr_s(self) -> float:
        if len(self.samples_s) < 4:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.samples_s, n=4, method="inclusive")
        return q3 - q1

    @property
    def noisy(self) -> bool:
        return self.iqr_s > NOISY_IQR_FRACTION * self.median_s


def measure(fn: Callable[[], object], budget: Budget = Budget(),
            sync: Callable[[], object] | None = None) -> Measurement:
    """Time fn(); `sync` (e.g. torch.cuda.synchronize) ends every timed block."""
    sync = sync or (lambda: None)
    clock = time.perf_counter

    def block(number: int) -> float:
        start = clock()
        for _ in range(number):
            fn()
        sync()
        return clock() - start

    deadline = clock() + budget.warmup_ms / 1e3
    block(1)
    while clock() < deadline:
        block(1)
    number = 1
    while (elapsed := block(number)) < budget.min_block_s:
        number *= max(2, min(10, int(budget.min_block_s / max(elapsed, 1e-9))))
    samples = []
    deadline = clock() + budget.sample_ms / 1e3
    while len(samples) < budget.max_samples and (
            len(samples) < budget.min_samples or clock() < deadline):
        samples.append(block(number) / number)
    return Measurement(samples, number)
