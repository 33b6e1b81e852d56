"""TVM RPC (0.27): boards behind a tracker, with every remote call bounded in time.

TVM's own client can wait forever: `connect_tracker` retries a refused port for 60 s,
`TrackerSession.request` blocks for good on a key with no server (and a timed-out retry reconnects
on a socket without a timeout), and an RPC call has no timeout at all (a frozen board hangs its
caller). So pwbench
1. probes the tracker with a plain socket (2 s) and talks to it on its own socket with a timeout
   (`Tracker`: the tracker's JSON protocol, from tvm.rpc.base);
2. reads the summary first and fails at once for a key with no board;
3. asks for a session for at most `wait_s`, with `session_timeout` always set (the board's server
   kills a longer session, and the client sees RPCSessionTimeoutError);
4. runs every remote call of the main process in a thread it waits for with a deadline
   (`bounded`), and measures kernels in worker processes that the runner kills when silent past
   the target's `kernel_timeout_s` (measure/workers.py);
5. uploads each library under a unique name (a re-uploaded name makes dlopen hand back the old
   handle, and the session segfaults).
Errors come back as BoardError with one line that says what happened.

Importable with TVM's runtime library alone (TVM_USE_RUNTIME_LIB=1), as measuring workers run:
the compiler side (MetaSchedule's RPC runner for tuning) is imported inside the functions that
need it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import struct
import threading
import uuid
from pathlib import Path

import numpy as np
import tvm
from tvm import rpc as tvm_rpc
from tvm.rpc import base

from pwbench.measure.clocks import Clock
from pwbench.tvm_bridge import layouts
from pwbench.workloads.spec import ConvSpec

CLOCK = "time_evaluator"  # the row's clock: TVM's evaluator, run on the board itself
RUNTIME_ENV = {"TVM_USE_RUNTIME_LIB": "1", "TVM_FFI_DISABLE_TORCH_C_DLPACK": "1"}
PROBE_S = 2.0  # a tracker that does not accept within this is unreachable
TRACKER_S = 10.0  # a tracker that does not answer a summary within this is hung
BOARD_INFO = "pwbench.board_info"  # registered by pwbench's board server (board_server.py)


class BoardError(RuntimeError):
    """A board, its session or the tracker failed: one line saying which and why."""


# ---- the tracker -------------------------------------------------------------------------------
class Tracker:
    """A connection to a TVM RPC tracker on which every read and write has a timeout."""

    def __init__(self, host: str, port: int, timeout_s: float = TRACKER_S):
        self.where = f"{host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), PROBE_S)
        except OSError as exc:
            raise BoardError(f"the RPC tracker {self.where} is unreachable ({_os_reason(exc)}); "
                             "is it running? (`pwbench fleet local` starts one here)") from None
        self.sock.settimeout(timeout_s)
        try:
            self.sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            magic = struct.unpack("<i", base.recvall(self.sock, 4))[0]
        except (OSError, RuntimeError, struct.error) as exc:
            self.close()
            raise BoardError(f"{self.where} does not answer as an RPC tracker ({_os_reason(exc)})") from None
        if magic != base.RPC_TRACKER_MAGIC:
            self.close()
            raise BoardError(f"{self.where} is not a TVM RPC tracker")

    def _ask(self, message, what: str):
        try:
            base.sendjson(self.sock, message)
            return base.recvjson(self.sock)
        except socket.timeout:
            raise BoardError(f"the RPC tracker {self.where} did not answer {what} within "
                             f"{self.sock.gettimeout():.0f} s") from None
        except (OSError, RuntimeError, ValueError, struct.error) as exc:
            raise BoardError(f"the RPC tracker {self.where} dropped the connection during {what} "
                             f"({_os_reason(exc)})") from None

    def summary(self) -> dict:
        value = self._ask([base.TrackerCode.SUMMARY], "a summary")
        if not (isinstance(value, list) and value and value[0] == base.TrackerCode.SUCCESS):
            raise BoardError(f"the RPC tracker {self.where} answered {str(value)[:80]!r}")
        return value[1]

    def request(self, key: str, wait_s: float, priority: int = 1) -> tuple[str, int, str]:
        """(host, port, match key) of a free board under `key`, waiting at most wait_s."""
        self.sock.settimeout(wait_s)
        try:
            value = self._ask([base.TrackerCode.REQUEST, key, "", priority], f"a request for {key!r}")
        except BoardError as exc:
            if "did not answer" in str(exc):
                raise BoardError(f"no board under key {key!r} became free within {wait_s:.0f} s "
                                 "(all busy? `pwbench fleet` shows them)") from None
            raise
        if not (isinstance(value, list) and value and value[0] == base.TrackerCode.SUCCESS):
            raise BoardError(f"the RPC tracker {self.where} refused a request for {key!r}: {value!r}")
        host, port, match = value[1]
        return host, int(port), match

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _os_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def key_counts(summary: dict) -> dict:
    """{key: {"total": boards registered, "free": idle, "busy": in a session, "pending": waiting
    requests}}. A busy board stays in server_info but leaves `free`; a request that gave up
    waiting still counts as pending until a board turns it down."""
    out = {k: {"total": 0, "free": int(v.get("free", 0)), "pending": int(v.get("pending", 0))}
           for k, v in summary.get("queue_info", {}).items()}
    for server in summary.get("server_info", []):
        key = str(server.get("key", ""))
        key = key.split(":", 1)[1] if key.startswith("server:") else key
        out.setdefault(key, {"total": 0, "free": 0, "pending": 0})["total"] += 1
    for counts in out.values():
        counts["busy"] = max(counts["total"] - counts["free"], 0)
    return {k: v for k, v in sorted(out.items()) if v["total"] or v["pending"]}


def fleet(host: str, port: int) -> dict:
    """The tracker's keys and their boards (key_counts), bounded."""
    with Tracker(host, port) as tracker:
        return key_counts(tracker.summary())


def boards(endpoint) -> int:
    """How many boards are registered under the endpoint's key (BoardError when none)."""
    counts = fleet(endpoint.host, endpoint.port).get(endpoint.key)
    if not counts or counts["total"] == 0:
        keys = ", ".join(fleet(endpoint.host, endpoint.port)) or "none"
        raise BoardError(f"no board is registered under key {endpoint.key!r} at tracker "
                         f"{endpoint.host}:{endpoint.port} (keys there: {keys})")
    return counts["total"]


def open_session(endpoint) -> tvm_rpc.RPCSession:
    """A session on a free board under the key: the tracker probed and asked with timeouts,
    the session limited to endpoint.session_timeout_s (the board's server enforces it)."""
    boards(endpoint)
    with Tracker(endpoint.host, endpoint.port) as tracker:
        host, port, match = tracker.request(endpoint.key, endpoint.wait_s)
    try:
        return tvm_rpc.connect(host, port, match, session_timeout=endpoint.session_timeout_s)
    except Exception as exc:  # TVM raises its own error types
        raise BoardError(f"the board at {host}:{port} (key {endpoint.key!r}) refused the "
                         f"session: {last_line(exc)}") from None


def bounded(fn, seconds: float, what: str):
    """fn() in a thread, waited for at most `seconds`: a main-process remote call that cannot
    hang pwbench (the thread of a frozen board is abandoned, blocked in its socket)."""
    box: dict = {}

    def call():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=call, daemon=True, name=f"pwbench-rpc {what}")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise BoardError(f"{what}: no answer within {seconds:.0f} s (the board or tracker hangs)")
    if "error" in box:
        error = box["error"]
        if isinstance(error, BoardError):
            raise error
        raise BoardError(f"{what}: {describe(error)}") from None
    return box.get("value")


def describe(exc: BaseException) -> str:
    """One line for an RPC failure, naming what usually causes it."""
    text = last_line(exc)
    if "session has expired" in text or type(exc).__name__ == "RPCSessionTimeoutError":
        limit = re.search(r"Your ([0-9.]+)s session", text)
        return (f"the board ended the session at its {limit.group(1) + ' s ' if limit else ''}limit "
                "(--rpc-session-timeout): the kernel needs longer")
    if "kShutdown" in text or "Broken pipe" in text or "Connection reset" in text:
        return ("the board's session died (the board was killed, lost, or its server crashed: "
                f"{text[:120]})")
    if "Failed to load dynamic shared library" in text or "cannot open shared object" in text:
        return f"the board cannot load the uploaded library (built for another CPU?): {text[:160]}"
    return text[:240]


def last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


# ---- what the board is -------------------------------------------------------------------------
def board_facts(endpoint) -> dict:
    """The board's own facts (pwbench's board server answers them all; a stock TVM server what
    its global functions tell), asked in one bounded session."""
    deadline = endpoint.wait_s + min(endpoint.session_timeout_s, 60.0) + 5

    def ask():
        session = open_session(endpoint)
        try:
            return _facts(session)
        finally:
            del session

    return bounded(ask, deadline, f"asking the board under {endpoint} what it is")


def _facts(session) -> dict:
    info = _remote_call(session, BOARD_INFO)
    if info is not None:
        facts = json.loads(str(info))
        facts["server"] = "pwbench board server"
        return facts
    triple = _remote_call(session, "tvm.codegen.llvm.GetProcessTriple")
    cpu = _remote_call(session, "tvm.codegen.llvm.GetHostCPUName")
    cores = _remote_call(session, "s_tir.meta_schedule.cpu_count", False)
    threads = _remote_call(session, "runtime.NumThreads")
    machine = str(triple).split("-")[0] if triple else None
    return {"machine": machine, "llvm_triple": str(triple) if triple else None,
            "llvm_host_cpu": str(cpu) if cpu else None,
            "cpu_model": f"{machine} CPU (LLVM: {cpu})" if cpu else machine,
            "cores": int(cores) if cores is not None else None,
            "tvm_threads": int(threads) if threads is not None else None,
            "cpu_flags": [], "emulated": False,
            "server": "stock TVM RPC server (facts from its global functions only)"}


def _remote_call(session, name: str, *args):
    """A global function of the board called remotely, None when the board lacks it."""
    try:
        fn = session.get_function(name)
    except Exception:  # noqa: BLE001 - a missing function raises AttributeError or TVMError
        return None
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001
        return None


def set_threads(session, threads: int) -> None:
    """The board session's TVM thread pool to `threads` (sessions are forked per client)."""
    try:
        session.get_function("runtime.config_threadpool")(0, threads)
    except Exception as exc:  # noqa: BLE001
        raise BoardError(f"cannot set the board's thread count: {describe(exc)}") from None


def upload(session, library: str, key: str):
    """The library uploaded under a name no other upload has used, loaded on the board."""
    digest = hashlib.sha256(Path(library).read_bytes()).hexdigest()[:12]
    name = f"pwbench-{digest}-{os.getpid()}-{uuid.uuid4().hex[:8]}{Path(library).suffix}"
    try:
        session.upload(library, name)
    except Exception as exc:  # noqa: BLE001
        raise BoardError(f"the board under key {key!r} refused the upload of "
                         f"{Path(library).name}: {describe(exc)}") from None
    try:
        return session.load_module(name)
    except Exception as exc:  # noqa: BLE001
        raise BoardError(describe(exc)) from None


# ---- kernels on the board ----------------------------------------------------------------------
class EvaluatorClock:
    """TVM's time_evaluator, run on the board: the board times `number` back-to-back calls itself
    (an RPC round trip costs 15-18 us here, far more than a small kernel), once per sample."""

    name = CLOCK

    def __init__(self, module, device, args):
        self.module, self.device, self.args = module, device, args
        self._evaluators: dict[int, object] = {}

    def time(self, number: int) -> float:
        try:
            evaluator = self._evaluators.get(number)
            if evaluator is None:
                evaluator = self._evaluators[number] = self.module.time_evaluator(
                    "main", self.device, number=number, repeat=1)
            return float(evaluator(*self.args).mean) * number
        except Exception as exc:  # noqa: BLE001
            raise BoardError(describe(exc)) from None

    def release(self) -> None:
        """Drop the module and buffers (and so the session they belong to)."""
        self._evaluators.clear()
        self.module = self.device = self.args = None


class RemoteConv:
    """A compiled conv loaded on a board: its buffers live there; load() sends the inputs,
    result() and inputs() read them back, so verify.check runs unchanged."""

    exact = True  # a direct conv, no Winograd

    def __init__(self, spec: ConvSpec, library: str, threads: int, endpoint):
        self.spec = spec
        self.session = open_session(endpoint)
        set_threads(self.session, threads)
        self.module = upload(self.session, library, endpoint.key)
        device = self.session.cpu(0)
        try:
            self.fn = self.module["main"]
            self.x = tvm.runtime.empty(layouts.input_shape(spec), spec.dtype, device)
            self.w = tvm.runtime.empty(layouts.weight_shape(spec), spec.dtype, device)
            self.y = tvm.runtime.empty(layouts.output_shape(spec), spec.dtype, device)
        except Exception as exc:  # noqa: BLE001
            raise BoardError(f"cannot allocate the kernel's buffers on the board: {describe(exc)}") from None
        self.clock: Clock = EvaluatorClock(self.module, device, (self.x, self.w, self.y))

    def _remote(self, what, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001
            raise BoardError(f"{what}: {describe(exc)}") from None

    def load(self, x: np.ndarray, w: np.ndarray) -> None:
        self._remote("sending inputs to the board", self.x.copyfrom, layouts.to_layout(self.spec, x))
        self._remote("sending weights to the board", self.w.copyfrom,
                     np.ascontiguousarray(layouts.weight_to_tvm(self.spec, w)))

    def __call__(self) -> None:
        self._remote("running the kernel on the board", self.fn, self.x, self.w, self.y)

    def result(self) -> np.ndarray:
        return layouts.from_layout(self.spec, self._remote("reading the output back", self.y.numpy))

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        x = self._remote("reading the inputs back", self.x.numpy)
        w = self._remote("reading the weights back", self.w.numpy)
        return layouts.from_layout(self.spec, x), layouts.weight_from_tvm(self.spec, w)

    def close(self) -> None:
        """End the session (the board then frees its buffers and deletes the upload). TVM has no
        call that closes a session: it ends when nothing refers to it, so every reference this
        kernel holds goes, the clock's too (a caller may still hold the clock)."""
        clock = self.__dict__.pop("clock", None)
        if isinstance(clock, EvaluatorClock):
            clock.release()
        for name in ("fn", "x", "w", "y", "module", "session"):
            self.__dict__.pop(name, None)


def load_kernel(spec: ConvSpec, library: str, threads: int, endpoint) -> RemoteConv:
    """Built.make of a TVM kernel for a board (picklable: a partial of this and plain values)."""
    return RemoteConv(spec, library, threads, endpoint)


# ---- tuning through the tracker (MetaSchedule's RPCRunner) ---------------------------------------
def tuning_runner(endpoint, threads: int, evaluator_config, workers: int):
    """MetaSchedule's RPCRunner with one worker per board under the key, every step bounded:
    sessions come from the bounded tracker client (RPCConfig's own request can block forever),
    inputs are filled from here (a board with TVM's runtime alone lacks the random-fill function),
    the board's thread pool is set to `threads` before each candidate is timed, and the runner's
    process pool has a deadline per candidate (MetaSchedule builds it with none: a frozen board
    would hang tuning)."""
    import functools

    from tvm.s_tir import meta_schedule as ms
    from tvm.support.popen_pool import PopenPoolExecutor

    config = ms.runner.RPCConfig(tracker_host=endpoint.host, tracker_port=endpoint.port,
                                 tracker_key=endpoint.key,
                                 session_timeout_sec=int(endpoint.session_timeout_s))
    plain = (endpoint.host, endpoint.port, endpoint.key, endpoint.session_timeout_s, endpoint.wait_s)
    runner = ms.runner.RPCRunner(
        rpc_config=config, evaluator_config=evaluator_config, max_workers=workers,
        f_create_session=functools.partial(_tuning_session, plain),
        f_alloc_argument=_alloc_from_client,
        f_run_evaluator=functools.partial(_run_evaluator, threads))
    runner.pool.shutdown()
    runner.pool = PopenPoolExecutor(max_workers=workers,
                                    timeout=endpoint.wait_s + endpoint.session_timeout_s + 30)
    return runner


class _Plain:
    def __init__(self, host, port, key, session_timeout_s, wait_s):
        self.host, self.port, self.key = host, port, key
        self.session_timeout_s, self.wait_s = session_timeout_s, wait_s


def _tuning_session(plain: tuple, rpc_config):  # runs in MetaSchedule's runner workers
    return open_session(_Plain(*plain))


def _alloc_from_client(session, device, args_info, alloc_repeat):
    """Inputs filled with numpy here and copied to the board."""
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    rng = np.random.default_rng(0)

    def fill(arg):
        shape, dtype = tuple(int(d) for d in arg.shape), str(arg.dtype)
        values = (rng.uniform(-1, 1, size=shape) if "float" in dtype
                  else rng.integers(0, 8, size=shape))
        arg.copyfrom(values.astype(dtype))

    return alloc_argument_common(fill, device, args_info, alloc_repeat)


def _run_evaluator(threads, session, rt_mod, device, evaluator_config, repeated_args):
    from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

    set_threads(session, threads)
    return run_evaluator_common(rt_mod, device, evaluator_config, repeated_args)


def export_linked(cross_compiler: str | None, mod) -> str:
    """LocalBuilder's f_export for a board: a linked .so (cross-linked for an aarch64 board), so
    the board needs no compiler (MetaSchedule's default .tar is linked by the board's g++)."""
    import tempfile

    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="pwbench-candidate-"), "tvm_tmp_mod.so")
    if cross_compiler:
        mod.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
    else:
        mod.export_library(path)
    return path
