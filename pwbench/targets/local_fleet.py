"""A fleet on this machine, to try RPC and to test it: a TVM RPC tracker, x86 board servers and an
emulated aarch64 board (pwbench's board server in an aarch64 Python with the aarch64 TVM wheel,
under qemu-user), all bound to 127.0.0.1.

Every process is started in its own session under coreutils `timeout` (so it ends at its lifetime
even if pwbench is killed) and stopped by its process group. A state file (JSON: tracker address,
process ids, logs) lets `pwbench fleet local --stop` stop a fleet another pwbench started.

The emulated board needs an aarch64 runtime directory made by scripts/setup_aarch64_runtime.sh
(an aarch64 CPython sysroot from Debian's arm64 packages and the aarch64 TVM wheels, unpacked,
never installed): $PWBENCH_AARCH64_RUNTIME, else <pwbench cache>/aarch64-runtime.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pwbench.tvm_bridge
from pwbench import env
from pwbench.errors import UserError

HOST = "127.0.0.1"
DEFAULT_PORT = 9190  # TVM's conventional tracker port
X86_KEY, AARCH64_KEY = "x86", "aarch64-qemu"
BOARD_SERVER = Path(pwbench.tvm_bridge.__file__).parent / "board_server.py"
SETUP_SCRIPT = "scripts/setup_aarch64_runtime.sh"
START_TIMEOUT_S = 240.0  # an emulated server imports TVM under qemu: 15-40 s on 2 busy cores


def default_state_file() -> Path:
    return env.cache_dir() / "fleet" / "local.json"


def aarch64_runtime(given: Path | None = None) -> Path:
    return Path(given or os.environ.get("PWBENCH_AARCH64_RUNTIME")
                or env.cache_dir() / "aarch64-runtime")


def aarch64_problem(runtime: Path) -> str | None:
    """Why the emulated aarch64 board cannot start here, or None."""
    if shutil.which("qemu-aarch64") is None:
        return "qemu-aarch64 is not installed (Debian: apt-get install qemu-user)"
    if not (runtime / "bin" / "python-aarch64").exists():
        return (f"no aarch64 runtime in {runtime}: make one with `bash {SETUP_SCRIPT} {runtime}` "
                "(from a pwbench checkout, as root: apt-get downloads arm64 packages; ~20 s cold, "
                "cached after) or point PWBENCH_AARCH64_RUNTIME at one")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


@dataclass
class Process:
    name: str
    pid: int  # of its `timeout` wrapper, leader of its own process group
    key: str = ""
    port: int = 0
    log: str = ""

    def alive(self) -> bool:
        """Whether anything of its process group still runs (zombies do not count)."""
        return bool(_group_members(self.pid))

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


@dataclass
class Fleet:
    """The processes of a local fleet; saved to `state_file` after every change."""
    state_file: Path
    log_dir: Path
    lifetime_s: float
    tracker_port: int = 0
    processes: list = field(default_factory=list)
    started_utc: str = ""

    def __post_init__(self):
        self._popen: dict[int, subprocess.Popen] = {}

    @property
    def tracker(self) -> str:
        return f"{HOST}:{self.tracker_port}"

    # ---- starting ---------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env_vars: dict | None = None, key: str = "",
               port: int = 0) -> Process:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "w") as log:
            popen = subprocess.Popen(
                ["timeout", "--kill-after=5", str(int(self.lifetime_s)), *argv], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env_vars,
                start_new_session=True, cwd=self.log_dir)
        process = Process(name, popen.pid, key, port, str(log_path))
        self._popen[popen.pid] = popen
        self.processes.append(process)
        self.save()
        return process

    def start_tracker(self, port: int = DEFAULT_PORT) -> int:
        if port_in_use(port):
            raise UserError(f"port {port} on {HOST} is in use (another tracker? `pwbench fleet "
                            "local --stop`); choose another with --port")
        self.tracker_port = port
        self.started_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self._spawn("tracker", [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", HOST,
                                "--port", str(port), "--port-end", str(port + 1), "--silent"],
                    port=port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, port), 1).close()
                return port
            except OSError:
                if not self.processes[-1].alive():
                    break
                time.sleep(0.2)
        raise UserError(f"the tracker did not start on {HOST}:{port}; see {self.processes[-1].log}")

    def start_server(self, key: str, python: str | None = None, stock: bool = False,
                     env_extra: dict | None = None) -> Process:
        """An RPC server under `key`: pwbench's board server (stock=False) or TVM's own."""
        port = free_port()
        variables = dict(os.environ, **(env_extra or {}))
        if python:  # a foreign Python (the emulated board): nothing of this machine's paths
            for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
                variables.pop(var, None)
        python = python or sys.executable
        common = ["--host", HOST, "--port", str(port), "--tracker", self.tracker, "--key", key]
        argv = ([python, "-m", "tvm.exec.rpc_server", *common, "--port-end", str(port + 1)]
                if stock else [python, str(BOARD_SERVER), *common])
        count = sum(p.key == key for p in self.processes)
        return self._spawn(f"server-{key}-{count + 1}", argv, variables, key, port)

    def start_aarch64(self, runtime: Path, key: str = AARCH64_KEY, qemu_cpu: str | None = None) -> Process:
        problem = aarch64_problem(runtime)
        if problem:
            raise UserError(f"the emulated aarch64 board cannot start: {problem}")
        extra = {"TVM_USE_RUNTIME_LIB": "1"} | ({"QEMU_CPU": qemu_cpu} if qemu_cpu else {})
        return self.start_server(key, str(runtime / "bin" / "python-aarch64"), env_extra=extra)

    def wait(self, want: dict[str, int], timeout_s: float = START_TIMEOUT_S, on_wait=None) -> float:
        """Until every key has its boards registered with the tracker; seconds it took."""
        from pwbench.tvm_bridge import rpc

        start = time.monotonic()
        while True:
            try:
                counts = rpc.fleet(HOST, self.tracker_port)
            except rpc.BoardError as exc:
                raise UserError(f"local fleet: {exc}") from None
            if all(counts.get(k, {}).get("total", 0) >= n for k, n in want.items()):
                return time.monotonic() - start
            for key in want:
                mine = [p for p in self.processes if p.key == key]
                if mine and not any(p.alive() for p in mine):
                    raise UserError(f"local fleet: every server of key {key!r} exited; see {mine[-1].log}")
            if time.monotonic() - start > timeout_s:
                raise UserError(f"local fleet: servers not registered after {timeout_s:.0f} s "
                                f"({counts}); see the logs in {self.log_dir}")
            if on_wait:
                on_wait(counts)
            time.sleep(0.5)

    # ---- stopping ---------------------------------------------------------------------------
    def kill(self, process: Process) -> None:
        """SIGKILL one process group at once (a board that dies mid-run, in tests)."""
        process.signal(signal.SIGKILL)
        self._reap(process)

    def stop(self, grace_s: float = 10.0) -> list[str]:
        """Every process, servers first: SIGTERM, then SIGKILL after grace_s. Returns names."""
        stopped = []
        for process in reversed(self.processes):
            if process.alive():
                stopped.append(process.name)
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self.processes:
            while process.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if process.alive():
                process.signal(signal.SIGKILL)
            self._reap(process)
        self.processes.clear()
        try:
            self.state_file.unlink()
        except OSError:
            pass
        return stopped

    def _reap(self, process: Process) -> None:
        popen = self._popen.pop(process.pid, None)
        if popen is not None:
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def alive(self) -> list[Process]:
        return [p for p in self.processes if p.alive()]

    # ---- the state file ---------------------------------------------------------------------
    def save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        data = {"tracker_port": self.tracker_port, "log_dir": str(self.log_dir),
                "lifetime_s": self.lifetime_s, "started_utc": self.started_utc,
                "processes": [asdict(p) for p in self.processes]}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.state_file)

    @classmethod
    def load(cls, state_file: Path) -> Fleet | None:
        try:
            data = json.loads(Path(state_file).read_text())
            fleet = cls(Path(state_file), Path(data["log_dir"]), float(data["lifetime_s"]),
                        int(data["tracker_port"]), [Process(**p) for p in data["processes"]],
                        data.get("started_utc", ""))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return fleet


def new(state_file: Path | None = None, lifetime_s: float = 4 * 3600.0,
        log_dir: Path | None = None) -> Fleet:
    """A fleet to start; refuses while the state file names a fleet still running."""
    state_file = Path(state_file or default_state_file())
    running = Fleet.load(state_file)
    if running and running.alive():
        raise UserError(f"a local fleet is already running (tracker {running.tracker}, "
                        f"{len(running.alive())} processes); stop it with `pwbench fleet local --stop`")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    return Fleet(state_file, Path(log_dir or state_file.parent / f"logs-{stamp}"), lifetime_s)
