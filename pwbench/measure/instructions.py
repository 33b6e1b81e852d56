"""The instruction clock: kernels counted by valgrind's callgrind, a regression gate that does not flake.

Times on a shared CI machine move by 20-50 % between runs; the number of instructions a kernel
executes does not. Under `pwbench run --clock instructions` every worker process runs under

    valgrind --tool=callgrind --instr-atstart=no --combine-dumps=yes --dump-line=no
             --cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=8388608,16,64 ...

and counts each kernel, after it passed its numerical check, like this:

    make, verify (3 calls), 10 warm-up calls         uninstrumented: runs at valgrind's plain speed
    START_INSTRUMENTATION
    [ZERO_STATS; kernel(); DUMP_STATS_AT("k<i>#<call>")] x (1 + calls)    one profile part per call
    STOP_INSTRUMENTATION

(the client requests come from a five-function C library built here, `REQUESTS_SOURCE`). Why so:
- `--instr-atstart=no` and client requests, not `--toggle-collect`: start-up (Python, torch's 5 G
  instructions of imports) runs without instrumentation, 3.5x (torch) to 5x (TVM) cheaper in CPU
  than instrumenting from the start and collecting only inside the kernel's function.
- What is counted is the call as the worker makes it: the kernel and the few thousand
  instructions of the Python call and the client requests around it (`empty_call_instructions`
  is that overhead, counted with a call that does nothing in the same process). No function
  names are needed, so torch ops, blocks and TVM kernels are counted alike.
- One dump per call; the first counted call of each kernel is dropped: the simulated caches start
  cold at START_INSTRUMENTATION, and any first-call cost the warm-up left is in it.
- The cache geometry is pinned, or valgrind would copy the host's caches and the cache figures
  would change between CI machines. With the cache simulation each call also gives L1 and
  last-level misses, and `estimated_cycles` = Ir + 10 x L1 misses + 100 x LL misses, the
  "Cycle Estimation" (CEst) of KCachegrind (kcachegrind/libcore/globalconfig.cpp, knownFormula,
  with cache simulation only: no branch or bus events). Gate on instructions: the estimate
  follows malloc's page faults in torch (bimodal between calls); it is information.
- The worker reads its own profile parts right after its dumps (the file is complete when a dump
  returns), so a crash later in the process loses nothing counted, and the parent kills the
  process as soon as it says it is done (valgrind's exit dump and torch's teardown are not waited
  for).

What keeps counts stable (README, "Instruction counts"): one thread (valgrind serialises threads,
so a pool's spin-waits would be counted), the ISA capped to what valgrind decodes (no AVX-512:
the target builds TVM kernels for an AVX2 CPU and caps oneDNN / MKL / ATen, recorded in the run's
metadata), the warm-up (torch's count settles only after ~5 calls following the check: glibc's
heap), and a fixed Python hash seed. A torch op spends a third or more of its instructions in
glibc malloc, whose path length depends on the heap's state, and that state depends on every
allocation the process made before, whose order follows Python's (randomised) string hashes: with
a random seed a torch depthwise conv's median count moved by 1 % from one process to the next,
with PYTHONHASHSEED=0 it was the same in every process, call for call. TVM kernels called from C
(tvm_bridge/ffi_kernel.py) allocate nothing and give the same count on every call. What remains
is what any change before a kernel does to the heap (another layer in the suite, another
pwbench, a longer output path): NOISE_FLOOR, measured with random hash seeds. Each round's
process gets its round index as seed, so `--processes 3` averages over three heaps.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import statistics
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pwbench import native, samples
from pwbench.errors import UserError

CLOCK = "instructions"
CACHES = {"I1": "32768,8,64", "D1": "32768,8,64", "LL": "8388608,16,64"}  # size,assoc,line
WARMUP_CALLS = 10  # uncounted, after the check's 3 calls: oneDNN's JIT, glibc's heap settling
DROPPED_CALLS = 1  # counted, then dropped: cold simulated caches
DEFAULT_CALLS = 10  # counted calls kept per kernel and process
DEFAULT_PROCESSES = 1  # counts differ by < 0.1 % between processes; each one starts torch again
# Largest relative difference of a kernel's instructions per call between separate invocations
# measured on this code (scripts/instruction_study.py, 10 invocations: README, "Instruction
# counts"); compare's default count threshold (analysis/compare.py) sits well above it.
# A torch op's count moves with the heap its process built first: 0.13 % at most over 10 repeats
# of one command (scripts/instruction_study.py), 0.5 % over random hash seeds, and 0.96 % and
# 1.18 % for a depthwise conv between two invocations whose workers differed only in the length
# of the run directory's name (tests/test_instructions.py, in CI-like runs of this machine). The
# workers' paths no longer depend on the run directory (pwbench/scratch.py), yet on a loaded VM
# (2026-12-07) repeats of one command, same output name, still moved a torch depthwise conv by
# 0.25-0.55 % (its calls by +-1.5 % within one process) and a pointwise one by 0.1 %: what moves
# it is not the path. TVM kernels count the same on every call and invocation.
NOISE_FLOOR = 0.015
ESTIMATED_CYCLES = ("Ir + 10 x (I1mr + D1mr + D1mw) + 100 x (ILmr + DLmr + DLmw): KCachegrind's "
                    "Cycle Estimation (libcore/globalconfig.cpp), cache simulation only")
COLUMNS = samples.COUNT_COLUMNS  # per call: instructions, l1_misses, ll_misses, estimated_cycles
DEBIAN_PACKAGE = "valgrind"
OUT_ENV = "PWBENCH_CALLGRIND_OUT"  # the worker's callgrind output file, set by ValgrindProcess


def hash_seed(process: int = 0) -> str:
    """The Python hash seed of a counting worker: the index of its round (round 0: seed 0), so an
    invocation repeats its counts exactly and several processes see different heaps (their median
    is robust to what shifts one heap); unless the environment sets one
    (scripts/instruction_study.py sets `random` to measure the floor)."""
    return os.environ.get("PYTHONHASHSEED") or str(process)

REQUESTS_SOURCE = r"""
/* callgrind's client requests as functions for ctypes; no-ops outside valgrind. */
#include <valgrind/callgrind.h>
int pwbench_cg_running(void) { return (int)RUNNING_ON_VALGRIND; }
void pwbench_cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void pwbench_cg_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
void pwbench_cg_zero(void) { CALLGRIND_ZERO_STATS; }
void pwbench_cg_dump(const char *tag) { CALLGRIND_DUMP_STATS_AT(tag); }
"""


@dataclass(frozen=True)
class Valgrind:
    """valgrind on this machine, and the client-request library built against its header."""
    path: str
    version: str  # e.g. "valgrind-3.19.0": counts of different versions are not comparable
    requests: str  # the built REQUESTS_SOURCE library
    calls: int = DEFAULT_CALLS

    def command(self, out: Path, log: Path) -> list[str]:
        return [self.path, *self.options(), f"--callgrind-out-file={out}", f"--log-file={log}"]

    def options(self) -> list[str]:
        return ["--tool=callgrind", "--instr-atstart=no", "--combine-dumps=yes", "--dump-line=no",
                "--cache-sim=yes", *(f"--{level}={geometry}" for level, geometry in CACHES.items())]

    def facts(self) -> dict:
        """What the run metadata records of this clock."""
        return {"valgrind": self.version, "options": " ".join(self.options()),
                "counted_calls": self.calls, "dropped_calls": DROPPED_CALLS,
                "warmup_calls": WARMUP_CALLS,
                "python_hash_seed": os.environ.get("PYTHONHASHSEED") or "round index",
                "estimated_cycles": ESTIMATED_CYCLES}


def find(calls: int = DEFAULT_CALLS) -> Valgrind:
    """valgrind, checked in the main process before anything is built: a missing one is one line."""
    path = os.environ.get("PWBENCH_VALGRIND") or shutil.which("valgrind")
    if not path or not os.access(path, os.X_OK):
        raise UserError(f"--clock instructions needs valgrind, which is not installed here: "
                        f"apt-get install {DEBIAN_PACKAGE} (Debian/Ubuntu package "
                        f"'{DEBIAN_PACKAGE}')")
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise UserError(f"{path} does not run ({exc}): reinstall Debian package "
                        f"'{DEBIAN_PACKAGE}'") from None
    include = Path(path).resolve().parent.parent / "include"
    if not (include / "valgrind" / "callgrind.h").is_file():
        raise UserError(f"valgrind's header valgrind/callgrind.h is not under {include}: install "
                        f"Debian package '{DEBIAN_PACKAGE}', which ships it")
    try:
        requests = native.library("pwbench_callgrind", REQUESTS_SOURCE, (f"-I{include}",))
    except native.BuildError as exc:
        raise UserError(f"--clock instructions builds a small C library of callgrind client "
                        f"requests and cannot: {exc} (apt-get install gcc)") from None
    return Valgrind(path, version or "unknown", str(requests), calls)


# ---- reading callgrind's output ----------------------------------------------------------------

@dataclass
class Part:
    """One dump: its trigger ("Client Request: <tag>", "Program termination") and event totals."""
    trigger: str
    events: dict[str, int] = field(default_factory=dict)


def read_parts(path: Path, offset: int = 0) -> tuple[list[Part], int]:
    """The complete parts of a callgrind file (one per dump with --combine-dumps=yes) from byte
    `offset` on, and the offset after the last complete one. Each part's `totals:` line is read,
    not `summary:`, which underflows (to about 2**64) after a ZERO_STATS."""
    parts, current, events, end = [], None, [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        for raw in fh:
            line = raw.decode(errors="replace")
            if line.startswith("part:"):
                current = Part("")
            elif current is None:
                pass
            elif line.startswith("desc: Trigger:"):
                current.trigger = line.split(":", 2)[2].strip()
            elif line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("totals:"):
                values = [int(v) for v in line.split()[1:]]
                values += [0] * (len(events) - len(values))  # trailing zeros may be left out
                current.events = dict(zip(events, values))
                parts.append(current)
                current, end = None, fh.tell()
    return parts, end


def per_call(events: dict[str, int]) -> dict[str, int]:
    """The row's figures of one call from callgrind's events (Ir, I1mr, D1mr, ..., DLmw)."""
    l1 = events.get("I1mr", 0) + events.get("D1mr", 0) + events.get("D1mw", 0)
    ll = events.get("ILmr", 0) + events.get("DLmr", 0) + events.get("DLmw", 0)
    return {"instructions": events.get("Ir", 0), "l1_misses": l1, "ll_misses": ll,
            "estimated_cycles": events.get("Ir", 0) + 10 * l1 + 100 * ll}


# ---- in a worker under callgrind ---------------------------------------------------------------

class Counter:
    """Counts kernels in this process, which must run under callgrind (ValgrindProcess)."""

    def __init__(self, valgrind: Valgrind):
        lib = ctypes.CDLL(valgrind.requests)
        lib.pwbench_cg_dump.argtypes = [ctypes.c_char_p]
        if not lib.pwbench_cg_running():
            raise RuntimeError("the instruction clock's worker is not running under valgrind")
        self.lib, self.calls = lib, valgrind.calls
        self.out, self.offset, self.kernels = Path(os.environ[OUT_ENV]), 0, 0
        self._empty = None

    def count(self, clock) -> dict[str, list[int]]:
        """Per-call figures of `calls` calls of the kernel (after the dropped one)."""
        tag = f"k{self.kernels}"
        self.kernels += 1
        tags = [f"{tag}#{i}".encode() for i in range(DROPPED_CALLS + self.calls)]  # made here:
        self.lib.pwbench_cg_start()  # formatting a tag inside the window would be counted
        try:
            clock.count(self.lib.pwbench_cg_zero, self.lib.pwbench_cg_dump, tags)
        finally:
            self.lib.pwbench_cg_stop()
        parts, self.offset = read_parts(self.out, self.offset)
        found = {p.trigger.removeprefix("Client Request: "): p for p in parts}
        missing = [t.decode() for t in tags if t.decode() not in found]
        if missing:
            raise RuntimeError(f"callgrind wrote no counts for {', '.join(missing[:3])}")
        calls = [per_call(found[t.decode()].events) for t in tags[DROPPED_CALLS:]]
        return {column: [c[column] for c in calls] for column in COLUMNS}

    def empty_call(self) -> float:
        """Median instructions of a call that does nothing, counted the same way (once)."""
        if self._empty is None:
            from pwbench.measure.clocks import InstructionClock

            self._empty = statistics.median(self.count(InstructionClock(_nothing))["instructions"])
        return self._empty


def _nothing() -> None:
    pass


# ---- starting a worker under callgrind ---------------------------------------------------------

class ValgrindProcess:
    """A worker process started under callgrind: what measure/workers.py uses of a
    multiprocessing.Process (start, is_alive, kill, join, exitcode; exitcode < 0 is the signal
    that killed it), plus `why()`, the reason valgrind logged when the kernel killed it (an
    instruction it cannot decode, a segfault and where). `code` is the Python the worker runs;
    `fd` the inherited end of its pipe."""

    def __init__(self, valgrind: Valgrind, work_dir: Path, code: str, fd: int, index: int = 0):
        work_dir.mkdir(parents=True, exist_ok=True)
        # a name of fixed length: the worker holds it (OUT_ENV), and its heap follows every length
        stem = work_dir / f"callgrind.{uuid.uuid4().hex}"
        self.out, self.log = Path(f"{stem}.out"), Path(f"{stem}.log")
        self.command = [*valgrind.command(self.out, self.log), sys.executable, "-c", code, str(fd)]
        self.fd, self.index, self.popen = fd, index, None

    def start(self) -> None:
        env = {**os.environ, OUT_ENV: str(self.out), "PYTHONHASHSEED": hash_seed(self.index)}
        self.popen = subprocess.Popen(self.command, pass_fds=(self.fd,), stdin=subprocess.DEVNULL,
                                      env=env)

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.is_alive():
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def why(self) -> str:
        return crash_reason(self.log.read_text(errors="replace") if self.log.exists() else "")


def crash_reason(log: str) -> str:
    """What valgrind's log says killed the process, in one line ('' when it says nothing)."""
    lines = [re.sub(r"^[=-]{2}\d+[=-]{2} ?", "", line).strip() for line in log.splitlines()]
    where = ""
    for i, line in enumerate(lines):
        if line.startswith("Process terminating"):
            where = next((m.group(1) for m in map(re.compile(r"at 0x[0-9A-F]+: (.*)").match,
                                                  lines[i + 1:i + 6]) if m), "")
            break
    unhandled = next((m.group(1).split() for m in map(re.compile(
        r".*unhandled instruction bytes: ((?:0x[0-9A-Fa-f]+ ?)+)").match, lines) if m), None)
    if unhandled:
        evex = " (0x62: an EVEX prefix, i.e. AVX-512)" if unhandled[0].upper() == "0X62" else ""
        return (f"valgrind cannot decode instruction bytes {' '.join(unhandled[:4])} ...{evex}"
                f"{' in ' + where if where else ''}: the kernel was built for an ISA valgrind "
                "lacks")
    return f"in {where}" if where else ""
