"""Measuring in fresh worker processes, as pyperf does: one process's samples understate the spread a
user sees between runs (memory layout, thread placement, clock state differ per process), so every
kernel is measured in `processes` separate processes, each with its own warm-up, and the samples
are pooled with their process index kept.

Rounds are interleaved across kernels: round r starts one fresh process that makes, checks and
times every kernel in turn (odd rounds in reverse order, so no kernel always runs first), then
exits. A kernel that kills its process (a segfault in generated code) becomes an error result; a
new process takes over the rest of the round, and that kernel is not tried again. A process that
sends nothing for `timeout_s` is killed the same way, so a hung kernel never hangs the run.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from pwbench.measure import timing, verify
from pwbench.workloads.spec import ConvSpec

STARTUP_TIMEOUT_S = 300.0  # importing torch and TVM under a loaded machine can take a minute


@dataclass
class Job:
    """One kernel to make, check and time in a worker."""
    key: tuple
    spec: ConvSpec
    make: Callable  # Built.make: picklable
    expected: str  # path of the saved verify.Expected
    env: dict  # environment the kernel's runtime needs, set before anything is unpickled
    clock: str = "host"  # the clock its rows will say timed it (Built.clock)


@dataclass
class Outcome:
    """What one process found for one kernel."""
    key: tuple
    process: int
    check: str = ""
    max_abs_err: float = float("nan")
    max_rel_err: float = float("nan")
    error: str = ""
    samples_s: list | None = None
    number: int = 0


@dataclass(frozen=True)
class Settings:
    processes: int
    budget: timing.Budget
    cache: str  # "hot" or "cold"
    threads: int
    timeout_s: float


def measure(jobs: list[Job], target, settings: Settings,
            on_outcome: Callable[[Outcome], None] = lambda o: None) -> list[Outcome]:
    """Every job in `settings.processes` rounds of fresh processes; outcomes in arrival order."""
    outcomes, crashed = [], set()
    for r in range(settings.processes):
        order = [j for j in (jobs if r % 2 == 0 else jobs[::-1]) if j.key not in crashed]
        for outcome in _round(order, r, target, settings):
            if outcome.error.startswith("worker process"):
                crashed.add(outcome.key)
            outcomes.append(outcome)
            on_outcome(outcome)
    return outcomes


def _round(jobs: list[Job], index: int, target, settings: Settings) -> Iterator[Outcome]:
    remaining = list(jobs)
    while remaining:
        with _Worker(remaining, target, settings) as worker:
            for outcome in worker.outcomes(index):
                remaining = [j for j in remaining if j.key != outcome.key]
                yield outcome


class _Worker:
    """One spawned process and the pipe to it."""

    def __init__(self, jobs: list[Job], target, settings: Settings):
        context = multiprocessing.get_context("spawn")  # fresh: nothing inherited but the env
        self.conn, child = context.Pipe()
        env = {k: v for j in jobs for k, v in j.env.items()}
        self.process = context.Process(target=_serve, args=(child, env, target, settings),
                                       daemon=True)
        self.process.start()
        child.close()
        self.jobs, self.timeout_s = jobs, settings.timeout_s
        self.conn.send_bytes(pickle.dumps(jobs))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()

    def outcomes(self, index: int) -> Iterator[Outcome]:
        current, wait = self.jobs[0].key, STARTUP_TIMEOUT_S + self.timeout_s
        while True:
            if not self.conn.poll(wait):
                self.process.kill()
                yield Outcome(current, index, error=f"worker process killed: no answer within "
                                                    f"{wait:.0f} s (a hung kernel?)")
                return
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self.process.join(10)
                yield Outcome(current, index, error=f"worker process died ({_death(self.process)})"
                                                    " while making, checking or timing this kernel")
                return
            if message[0] == "start":
                current, wait = message[1], self.timeout_s
            elif message[0] == "outcome":
                message[1].process = index
                yield message[1]
            else:  # "done"
                return


def _death(process) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def _serve(conn, env: dict, target, settings: Settings) -> None:
    """The worker: set up the process as the target wants it, then make, check and time each job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ.update(env)
    target.prepare_process(settings.threads)
    jobs = pickle.loads(conn.recv_bytes())  # unpickling imports the backends' runtimes
    evict = target.evict if settings.cache == "cold" else None
    for job in jobs:
        conn.send(("start", job.key))
        conn.send(("outcome", _measure_one(job, settings, evict)))
    conn.send(("done",))


def _measure_one(job: Job, settings: Settings, evict) -> Outcome:
    outcome, kernel = Outcome(job.key, -1), None
    try:
        kernel = job.make()
        check = verify.check(kernel, job.spec, verify.Expected.load(job.expected))
        outcome.check, outcome.error = check.verdict, check.detail
        outcome.max_abs_err, outcome.max_rel_err = check.max_abs_err, check.max_rel_err
        if check.verdict == "failed":  # a wrong kernel is never timed
            return outcome
        if kernel.clock.name != job.clock:  # the row would name the wrong clock
            raise RuntimeError(f"the kernel brought clock {kernel.clock.name!r}, its backend "
                               f"said {job.clock!r}")
        m = timing.measure(kernel.clock, settings.budget, evict)
        outcome.samples_s, outcome.number = m.samples_s, m.number
    except Exception as exc:  # one broken kernel must not lose the rest of the round
        outcome.error = describe_error(exc)
    finally:
        close = getattr(kernel, "close", None)  # e.g. a board's session, before the next kernel's
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - the outcome is what counts
                pass
    return outcome


def describe_error(exc: BaseException) -> str:
    """One line: the exception, its message's last line (a TVM error's is the one that says what
    went wrong, not LLVM's whole log) and where it was raised."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({Path(last.filename).name}:{last.lineno})" if last else ""
    return f"{type(exc).__name__}: {lines[-1].strip() if lines else ''}{where}"[:500]
