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

from tvm import rpc as tvm_rpc
from tvm.rpc import base


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
