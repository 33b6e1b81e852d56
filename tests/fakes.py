"""A fake target, fake backends and kernels with their own clocks, for the runner tests. They live
in a module (not in a test) because kernels are made and measured in worker processes, which
import them by name."""

from __future__ import annotations

import functools
import os
import signal
import time

import numpy as np

from pwbench import backends
from pwbench.backends.base import Built
from pwbench.measure.clocks import HostClock
from pwbench.targets import peaks
from pwbench.targets.base import Target
from pwbench.targets.host import HostCPU, last_level_cache_bytes

SECONDS_PER_CALL = 1e-3
POISONED = False  # set in a worker by a kernel that leaves its "device" unusable (sticky error)


class FakeTarget(Target):
    """Hardware that is not there: kernels 'run' anywhere, caches are a flag."""
    name, description, stacks = "fake", "a target made up by the tests", frozenset({"fake"})
    cold = False

    def facts(self) -> dict:
        return {"hardware": "fake hardware", "cpu_model": "fake"}

    def fingerprint_facts(self) -> dict:
        return {"fake": 1}

    def evict(self) -> None:
        FakeTarget.cold = True

    def device_problem(self) -> str | None:
        return "a sticky fake-device error" if POISONED else None

    def measure_peaks(self, threads: int):
        return peaks.Peaks(1e12, 1e11, "given", "given", target=self.name, threads=threads)


class FakeClock:
    """A clock that reports modelled time: SECONDS_PER_CALL per call, 3x after an eviction."""
    name = "fake-clock"

    def time(self, number: int) -> float:
        seconds = number * SECONDS_PER_CALL * (3 if FakeTarget.cold else 1)
        FakeTarget.cold = False
        return seconds


class ReferenceKernel:
    """Computes the reference itself (float64 NumPy): a correct kernel of any shape."""
    exact = True

    def __init__(self, spec, crash: str = ""):
        if crash == "make":
            os.kill(os.getpid(), signal.SIGSEGV)  # as generated code that segfaults
        self.spec, self.crash, self.clock = spec, crash, FakeClock()

    def load(self, x, w):
        self.x, self.w = x.copy(), w.copy()

    def __call__(self):
        global POISONED
        if self.crash == "hang":
            time.sleep(3600)
        POISONED = POISONED or self.crash == "poison"  # as a CUDA kernel's illegal address
        self.y = self.spec.reference(self.x, self.w)

    def result(self):
        return self.y

    def inputs(self):
        return self.x, self.w


class FakeBackend:
    name = "fake"
    crash = ""

    def __init__(self, target, options=None, events=None):
        pass

    def versions(self) -> dict:
        return {"fake": "1.0"}

    def build(self, spec) -> Built:
        crash = self.crash if spec.name.startswith("crash") else ""
        return Built(functools.partial(ReferenceKernel, spec, crash), clock="fake-clock",
                     columns={"fake_column": 42})


class WrongKernel(ReferenceKernel):
    def result(self):
        return self.y + 1  # off by one everywhere: fast, and wrong


class WrongBackend(FakeBackend):
    name = "fake-wrong"

    def build(self, spec) -> Built:
        return Built(functools.partial(WrongKernel, spec), clock="fake-clock")


class CrashingBackend(FakeBackend):
    name = "fake-crash"
    crash = "make"


class HangingBackend(FakeBackend):
    name = "fake-hang"
    crash = "hang"


class PoisoningBackend(FakeBackend):
    name = "fake-poison"
    crash = "poison"


for cls in (FakeBackend, WrongBackend, CrashingBackend, HangingBackend, PoisoningBackend):
    backends.register(backends.BackendInfo(cls.name, f"{__name__}:{cls.__name__}", (), "fake",
                                           "a test backend"))


class CacheSensitive:
    """A kernel whose operand fits in the last-level cache: summing it is faster when it is
    there (hot) than after the target evicted it (cold)."""
    exact = True

    def __init__(self):
        n = min(last_level_cache_bytes() // 4, 8 << 20) // 4
        self.data = np.ones(n, np.float32)
        self.clock = HostClock(self)

    def __call__(self):
        self.data.sum()


def host() -> HostCPU:
    return HostCPU()
