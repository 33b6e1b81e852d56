"""Cold caches on a CPU (`--cache cold`): evicted from every core a kernel's threads may use.

A kernel with several threads keeps its operands in each core's private L1 and L2 as well as in
the shared last-level cache. Streaming a buffer from the measuring thread alone empties that
core's private caches and the shared one, while the other cores' private L2 keep their share
warm. So one thread per CPU of the process's affinity mask, pinned to it, streams a buffer of its
own (twice its private caches, or its share of twice the last-level cache, whichever is larger)
before every sample. The threads wait on a barrier between evictions (blocked, not spinning, so
they take nothing from the kernel), and numpy leaves the GIL inside the add, so all cores stream
at once. Where threads cannot be pinned, the measuring thread streams the whole buffer.
"""

from __future__ import annotations

import os
import threading

import numpy as np


class Evictor:
    """Call it to evict; `cpus` are the CPUs its threads run on (for the record and the tests)."""

    def __init__(self, llc_bytes: int, private_bytes: int):
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.cpus = cpus if len(cpus) > 1 and hasattr(os, "sched_setaffinity") else []
        if not self.cpus:  # one CPU, or no pinning: stream everything from here
            self._buffer = np.zeros(2 * llc_bytes // 4, np.float32)
            return
        self.per_cpu = max(2 * private_bytes, 2 * llc_bytes // len(self.cpus))
        self.pinned: dict[int, set] = {}  # cpu -> the affinity its thread ran with
        self._barrier = threading.Barrier(len(self.cpus) + 1)
        for cpu in self.cpus:
            threading.Thread(target=self._serve, args=(cpu,), daemon=True,
                             name=f"pwbench-evict-{cpu}").start()

    def __call__(self) -> None:
        if not self.cpus:
            np.add(self._buffer, 1.0, out=self._buffer)
            return
        self._barrier.wait()  # start: every thread streams its buffer
        self._barrier.wait()  # done

    def _serve(self, cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})  # this thread only (Linux: 0 is the calling thread)
        self.pinned[cpu] = os.sched_getaffinity(0)
        buffer = np.zeros(self.per_cpu // 4, np.float32)  # first touched here: this core's memory
        while True:
            self._barrier.wait()
            np.add(buffer, 1.0, out=buffer)  # read and write every line
            self._barrier.wait()
