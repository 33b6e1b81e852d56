"""Measuring in fresh worker processes, as pyperf does: one process's samples understate the spread a
user sees between runs (memory layout, thread placement, clock state differ per process), so every
kernel is measured in `processes` separate processes, each with its own warm-up, and the samples
are pooled with their process index kept.

Rounds are interleaved across kernels: round r starts one fresh process that makes, checks and
times every kernel in turn (odd rounds in reverse order, so no kernel always runs first), then
exits. A kernel that kills its process (a segfault in generated code) becomes an error result; a
new process takes over the rest of the round, and that kernel is not tried again. A process that
sends nothing for `timeout_s` is killed the same way, so a hung kernel never hangs the run. A
kernel that leaves the process unable to run others (`target.device_problem()`: a sticky CUDA
error, after which every later kernel in that process would fail) ends its process the same way:
its row says why, and a fresh process takes over the rest.

Under the instruction clock (`Settings.valgrind`) each process is started under callgrind
instead (measure/instructions.py: a subprocess, not multiprocessing's spawn, so that valgrind is
the program started) and counts each checked kernel instead of timing it; everything else (pipe,
rounds, crashes, timeouts) is the same. A kernel that valgrind cannot run (an instruction it does
not decode) kills the process with SIGILL: an error row with valgrind's reason.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from pwbench.measure.clocks import InstructionClock, graphed
from pwbench.measure import instructions, timing, verify
from pwbench.workloads.spec import ConvSpec

PR_SET_PDEATHSIG = 1  # linux/prctl.h
STARTUP_TIMEOUT_S = 300.0  # importing torch and TVM under a loaded machine can take a minute
STOPPED = "worker process stopped"  # an outcome's error that ends its process (a poisoned device)


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
    columns: dict = field(default_factory=dict)  # what the kernel and the target's sensors add
    counts: dict | None = None  # instruction clock: per-call figures (instructions.COLUMNS)


@dataclass(frozen=True)
class Settings:
    processes: int
    budget: timing.Budget
    cache: str  # "hot" or "cold"
    threads: int
    timeout_s: float
    valgrind: instructions.Valgrind | None = None  # the instruction clock: count under callgrind
    work_dir: Path | None = None  # where callgrind's files go (instruction clock)
    cuda_graphs: bool = False  # replay each timed block from a CUDA graph (clock cuda-graph)
    startup_timeout_s: float = STARTUP_TIMEOUT_S  # a new process's first answer, beyond timeout_s


def measure(jobs: list[Job], target, settings: Settings,
            on_outcome: Callable[[Outcome], None] = lambda o: None) -> list[Outcome]:
    """Every job in `settings.processes` rounds of fresh processes; outcomes in arrival order."""
    outcomes, crashed = [], set()
    for r in range(settings.processes):
        order = [j for j in (jobs if r % 2 == 0 else jobs[::-1]) if j.key not in crashed]
        for outcome in _round(order, r, target, settings):
            if outcome.error.startswith("worker process"):  # died, hung or stopped: not again
                crashed.add(outcome.key)
            outcomes.append(outcome)
            on_outcome(outcome)
    return outcomes


def _round(jobs: list[Job], index: int, target, settings: Settings) -> Iterator[Outcome]:
    remaining = list(jobs)
    while remaining:
        with _Worker(remaining, target, settings, index) as worker:
            for outcome in worker.outcomes(index):
                remaining = [j for j in remaining if j.key != outcome.key]
                yield outcome


class _Worker:
    """One spawned process and the pipe to it."""

    def __init__(self, jobs: list[Job], target, settings: Settings, index: int = 0):
        context = multiprocessing.get_context("spawn")  # fresh: nothing inherited but the env
        self.conn, child = context.Pipe()
        env = {k: v for j in jobs for k, v in j.env.items()}
        if settings.valgrind is None:
            self.process = context.Process(target=_serve, args=(child, env, target, settings),
                                           daemon=True)
            self.process.start()
        else:
            self.process = instructions.ValgrindProcess(settings.valgrind, settings.work_dir,
                                                        SERVE_INHERITED, child.fileno(), index)
            started = time.time()
            self.process.start()
            # what spawn would pass: the parent's sys.path first (tests' backends are found by it)
            self.conn.send(sys.path)
            self.conn.send_bytes(pickle.dumps((env, target, settings, started)))
        child.close()
        self.jobs, self.timeout_s, self.startup_s = jobs, settings.timeout_s, settings.startup_timeout_s
        self.conn.send_bytes(pickle.dumps(jobs))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()

    def outcomes(self, index: int) -> Iterator[Outcome]:
        current, wait = self.jobs[0].key, self.startup_s + self.timeout_s
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
    why = process.why() if hasattr(process, "why") else ""  # valgrind's log says what killed it
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}" + (f": {why}" if why else "")
    return f"exit status {code}" + (f": {why}" if why else "")


# The Python a worker under valgrind runs (ValgrindProcess): its pipe is an inherited descriptor.
SERVE_INHERITED = "import sys; from pwbench.measure import workers; workers.serve_inherited(int(sys.argv[1]))"


def serve_inherited(fd: int) -> None:
    """A worker started as a plain program (under valgrind): what multiprocessing's spawn would
    have set up (sys.path, the arguments), then _serve."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    sys.path[:] = conn.recv()
    env, target, settings, started = pickle.loads(conn.recv_bytes())
    _serve(conn, env, target, settings, started)


def _serve(conn, env: dict, target, settings: Settings, started: float | None = None) -> None:
    """The worker: set up the process as the target wants it, then make, check and time each job."""
    _leave_stopping_to_parent()
    os.environ.update(env)
    target.prepare_process(settings.threads)
    counter = instructions.Counter(settings.valgrind) if settings.valgrind else None
    jobs = pickle.loads(conn.recv_bytes())  # unpickling imports the backends' runtimes
    process = {}
    if counter is not None:  # start-up under valgrind: Python, imports, one empty call counted
        counter.empty_call()
        process = {"valgrind_startup_s": time.time() - started,
                   "valgrind_startup_cpu_s": time.process_time()}
    for job in jobs:
        conn.send(("start", job.key))
        outcome = _measure_one(job, settings, target, counter)
        outcome.columns |= process if outcome.counts else {}
        problem = target.device_problem()
        if problem:  # every later kernel here would fail: this one's row says why (its times,
            # if any, are not trusted), and a new process takes over the rest
            outcome.error, outcome.samples_s, outcome.number = f"{STOPPED}: {problem}", None, 0
        conn.send(("outcome", outcome))
        if problem:
            break
    conn.send(("done",))


def _leave_stopping_to_parent() -> None:
    """Ctrl-C, SIGTERM and SIGHUP reach the whole process group: the parent handles them (it
    marks the run interrupted and kills its workers), so a worker dying first must not turn its
    kernel into an error row. Should the parent die without that (SIGKILL), Linux kills the
    worker with it (PR_SET_PDEATHSIG), so a hung kernel is never left running."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def _measure_one(job: Job, settings: Settings, target,
                 counter: instructions.Counter | None = None) -> Outcome:
    """Make, check and (if it passed) time or count one kernel; the target's sensors are read once
    the warm-up (at least the target's minimum) is over and again after the last sample."""
    outcome, kernel = Outcome(job.key, -1), None
    evict = target.evict if settings.cache == "cold" else None
    budget = replace(settings.budget, warmup_ms=max(settings.budget.warmup_ms, target.min_warmup_ms))
    phases = _Phases()
    try:
        kernel = job.make()
        check = verify.check(kernel, job.spec, verify.Expected.load(job.expected))
        outcome.check, outcome.error = check.verdict, check.detail
        outcome.max_abs_err, outcome.max_rel_err = check.max_abs_err, check.max_rel_err
        outcome.columns = dict(getattr(kernel, "columns", {})) | {"check_mode": check.mode}
        if check.verdict == "failed":  # a wrong kernel is never timed
            return outcome
        if kernel.clock.name != job.clock:  # the row would name the wrong clock
            raise RuntimeError(f"the kernel brought clock {kernel.clock.name!r}, its backend "
                               f"said {job.clock!r}")
        if counter is not None:
            phases.mark("check")
            for _ in range(instructions.WARMUP_CALLS):  # uncounted: first-call costs stay here
                kernel()
            phases.mark("warmup")
            outcome.counts = counter.count(kernel.clock)
            phases.mark("counted")
            outcome.columns |= phases.columns()
            if type(kernel.clock) is InstructionClock:  # counted from Python: what that adds
                outcome.columns["empty_call_instructions"] = counter.empty_call()
            return outcome
        clock = graphed(kernel) if settings.cuda_graphs else kernel.clock
        before = {}
        m = timing.measure(clock, budget, evict, warmed=lambda: before.update(target.conditions()))
        outcome.columns |= target.condition_columns(before, target.conditions()) | m.columns()
        outcome.columns |= {"clock": clock.name} if clock is not kernel.clock else {}
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


class _Phases:
    """Wall and CPU seconds of a kernel's phases under valgrind (make and check, warm-up, counted
    calls): what a suite's time under the instruction clock is spent on."""

    def __init__(self):
        self.last, self.seconds = (time.perf_counter(), time.process_time()), {}

    def mark(self, phase: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.seconds[phase] = (now[0] - self.last[0], now[1] - self.last[1])
        self.last = now

    def columns(self) -> dict:
        return {k: v for phase, (wall, cpu) in self.seconds.items()
                for k, v in ((f"valgrind_{phase}_s", wall), (f"valgrind_{phase}_cpu_s", cpu))}


def describe_error(exc: BaseException) -> str:
    """One line: the exception, its message's last line (a TVM error's is the one that says what
    went wrong, not LLVM's whole log) and where it was raised."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({Path(last.filename).name}:{last.lineno})" if last else ""
    return f"{type(exc).__name__}: {lines[-1].strip() if lines else ''}{where}"[:500]
