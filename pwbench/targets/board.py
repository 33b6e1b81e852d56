"""A board that is not this machine: an ARM board, or any box running a TVM RPC server. Kernels
are compiled here (cross-compiled and linked with aarch64-linux-gnu-gcc for an aarch64 board) and
run there, in sessions that a TVM RPC tracker hands out for a key (`--rpc-tracker HOST:PORT
--rpc-key KEY`). Everything this module knows about the board comes from the board itself, asked
through a session (pwbench's board server answers `pwbench.board_info`; a stock TVM server answers
a few LLVM and runtime functions): its facts, fingerprint and peaks are the board's, never the
host's. Talking to TVM is tvm_bridge/rpc.py's job; this module only decides.

Names: `arm` (generic aarch64 with NEON), a named core (`neoverse-n1`, `neoverse-v1` with SVE,
`cortex-a72`, ... in ARM_CORES), `arm:CPU` for any aarch64 CPU LLVM knows, or a full TVM target
with an aarch64 mtriple. With an RPC endpoint, `cpu` and `x86` also name a board: the remote box's
CPU, its TVM target derived from what the board says it is.
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass

from pwbench.errors import UserError
from pwbench.targets.base import Target

CROSS_COMPILER = "aarch64-linux-gnu-gcc"
AARCH64_TRIPLE = "aarch64-linux-gnu"
DEFAULT_SESSION_TIMEOUT_S = 120.0
WAIT_FOR_BOARD_S = 60.0  # how long a request waits for a free board under the key

# name -> (mcpu, extra mattr, what it is); every mcpu checked by LLVM before use
ARM_CORES = {
    "neoverse-n1": ("neoverse-n1", [], "Arm Neoverse N1 (Graviton2, Ampere Altra): NEON, dotprod, fp16"),
    "neoverse-n2": ("neoverse-n2", ["+sve2"], "Arm Neoverse N2: SVE2"),
    "neoverse-v1": ("neoverse-v1", ["+sve"], "Arm Neoverse V1 (Graviton3): SVE 256-bit"),
    "neoverse-v2": ("neoverse-v2", ["+sve2"], "Arm Neoverse V2 (Graviton4, Grace): SVE2"),
    "cortex-a53": ("cortex-a53", [], "Arm Cortex-A53 (Raspberry Pi 3): NEON"),
    "cortex-a55": ("cortex-a55", [], "Arm Cortex-A55: NEON, dotprod"),
    "cortex-a72": ("cortex-a72", [], "Arm Cortex-A72 (Raspberry Pi 4): NEON"),
    "cortex-a76": ("cortex-a76", [], "Arm Cortex-A76 (Raspberry Pi 5, RK3588): NEON, dotprod, fp16"),
    "cortex-a78": ("cortex-a78", [], "Arm Cortex-A78: NEON, dotprod, fp16"),
    "cortex-x1": ("cortex-x1", [], "Arm Cortex-X1: NEON, dotprod, fp16"),
}


@dataclass(frozen=True)
class Endpoint:
    """Where boards are: a TVM RPC tracker and the key the boards registered under."""
    host: str
    port: int
    key: str
    session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S  # the board ends a longer session
    wait_s: float = WAIT_FOR_BOARD_S  # for a free board, per request

    def __str__(self) -> str:
        return f"key {self.key!r} of tracker {self.host}:{self.port}"


def parse_address(text: str, option: str = "--rpc-tracker") -> tuple[str, int]:
    """'HOST:PORT' -> (host, port); anything else is one line."""
    host, sep, port = (text or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{option} expects HOST:PORT (e.g. 127.0.0.1:9190), got {text!r}")
    return host, int(port)


def endpoint(tracker: str | None, key: str | None, session_timeout_s: float | None = None
             ) -> Endpoint | None:
    """The endpoint of --rpc-tracker / --rpc-key (both or neither), None without them."""
    if not tracker and not key:
        return None
    if not tracker or not key:
        raise UserError("--rpc-tracker HOST:PORT and --rpc-key KEY go together "
                        "(`pwbench fleet --rpc-tracker HOST:PORT` lists the keys)")
    host, port = parse_address(tracker)
    return Endpoint(host, port, key, session_timeout_s or DEFAULT_SESSION_TIMEOUT_S)


def arm_spec(name: str) -> dict:
    """The TVM target of `arm`, a named core or `arm:CPU` (mcpu checked by LLVM later)."""
    spec = {"kind": "llvm", "mtriple": AARCH64_TRIPLE, "mattr": ["+neon"]}
    if name == "arm":
        return spec
    if name in ARM_CORES:
        mcpu, mattr, _ = ARM_CORES[name]
        return spec | {"mcpu": mcpu, "mattr": ["+neon", *mattr]}
    if name.startswith("arm:") and name[4:]:
        return spec | {"mcpu": name[4:]}
    raise UserError(f"unknown ARM core {name!r}: choose arm, one of {', '.join(ARM_CORES)}, or "
                    "arm:CPU for any aarch64 CPU LLVM knows (e.g. arm:cortex-a710)")


class Board(Target):
    """Kernels built here, run on a board through RPC.

    `wants` is the architecture the user asked for ("aarch64", "x86_64", or None for whatever the
    board is); `spec` the TVM target given (a dict), or None to derive it from the board."""

    stacks = frozenset({"tvm"})
    can_evict = False  # its caches cannot be emptied between remote samples from here

    def __init__(self, name: str = "arm", spec: dict | None = None, rpc: Endpoint | None = None,
                 wants: str | None = "aarch64", description: str = ""):
        self.base_name, self.spec, self.rpc, self.wants = name, spec, rpc, wants
        self.name = f"{name}@{rpc.key}" if rpc else name
        self.description = description or ("an aarch64 board: kernels cross-compiled here, run "
                                           "there through a TVM RPC tracker")
        self.where = f"board {rpc}" if rpc else "a remote board"
        self._facts: dict | None = None
        self.kernel_timeout_s = (rpc.wait_s + rpc.session_timeout_s + 30) if rpc else None

    def through(self, rpc: Endpoint) -> Board:
        return Board(self.base_name, self.spec, rpc, self.wants, self.description)

    # ---- what the board is ---------------------------------------------------------------
    def board(self) -> dict:
        """The board's own facts, asked once through a bounded session (UserError when the
        tracker, the key or the board does not answer)."""
        if self._facts is None:
            if self.rpc is None:
                raise UserError(self.run_problem())
            from pwbench.tvm_bridge import rpc

            try:
                self._facts = rpc.board_facts(self.rpc)
            except rpc.BoardError as exc:
                raise UserError(f"target {self.name}: {exc}") from None
        return self._facts

    @property
    def emulated(self) -> bool:
        return bool(self._facts and self._facts.get("emulated"))

    @property
    def triple(self) -> str:
        spec = self.spec or {}
        if spec.get("mtriple"):
            return str(spec["mtriple"])
        if self.wants == "aarch64":
            return AARCH64_TRIPLE
        machine = (self._facts or {}).get("machine") or platform.machine()
        return AARCH64_TRIPLE if machine == "aarch64" else f"{machine}-linux-gnu"

    @property
    def cross_compiler(self) -> str | None:
        """The C compiler that links kernels for the board; None: this machine's own."""
        arch = self.triple.split("-")[0]
        return None if arch == platform.machine() else f"{self.triple}-gcc"

    def tvm_target(self, threads: int) -> dict:
        from pwbench.tvm_bridge import tvm_targets

        spec = dict(self.spec) if self.spec else self._derived_spec()
        return tvm_targets.cpu_target(json.dumps(spec), threads, self.name)

    def toolchain(self, threads: int):
        """Cross-compiled here, run and measured on the boards of the endpoint."""
        from pwbench.tvm_bridge import toolchains

        return toolchains.Board(self.tvm_target(threads), threads, self.rpc, self.cross_compiler)

    def _derived_spec(self) -> dict:
        """The TVM target of the board as it describes itself: LLVM's name of its CPU when its
        TVM has LLVM (and the name is not 'generic'), else the architecture's baseline."""
        facts = self.board()
        cpu = facts.get("llvm_host_cpu")
        cpu = cpu if cpu and cpu != "generic" else None
        if facts.get("machine") == "aarch64":
            return {"kind": "llvm", "mtriple": AARCH64_TRIPLE, "mattr": ["+neon"],
                    **({"mcpu": cpu} if cpu else {})}
        return {"kind": "llvm", "mcpu": cpu or "x86-64"}

    # ---- abilities -------------------------------------------------------------------------
    def build_problem(self) -> str | None:
        compiler = self.cross_compiler
        if compiler and shutil.which(compiler) is None:
            package = f"gcc-{compiler.removesuffix('-gcc')}".replace("_", "-")
            return f"the cross compiler {compiler} is not installed (Debian: apt-get install {package})"
        return None

    def run_problem(self) -> str | None:
        if self.rpc is None:
            return (f"target {self.name}: kernels run on a board through a TVM RPC tracker: give "
                    "--rpc-tracker HOST:PORT --rpc-key KEY (`pwbench fleet local` starts an "
                    "emulated fleet on this machine)")
        try:
            facts = self.board()
        except UserError as exc:
            return str(exc)
        machine = facts.get("machine")
        if self.wants and machine and machine != self.wants:
            return (f"target {self.name}: the boards under {self.rpc} are {machine}, not "
                    f"{self.wants}; choose their target (e.g. --target cpu) or another --rpc-key")
        return None

    # ---- facts -----------------------------------------------------------------------------
    def facts(self) -> dict:
        b = self.board()
        flags = b.get("cpu_flags") or []
        emulated = " (emulated: qemu)" if b.get("emulated") else ""
        line = (f"board {self.rpc.key}: {b.get('cpu_model') or b.get('machine')}{emulated}, "
                f"{b.get('cores')} cores, {', '.join(flags[:6]) or 'no SIMD flags'}")
        return {"cpu_model": b.get("cpu_model"), "cpu_id": b.get("cpu_id", ""), "cpu_flags": flags,
                "cores": b.get("cores"), "machine": b.get("machine"), "llc_bytes": b.get("llc_bytes"),
                "hostname": b.get("hostname"), "build_host": platform.node(),
                "rpc_tracker": f"{self.rpc.host}:{self.rpc.port}", "rpc_key": self.rpc.key,
                "board": {k: v for k, v in b.items() if k != "cpuinfo"}, "emulated": bool(b.get("emulated")),
                "hardware": line}

    def fingerprint_facts(self) -> dict:
        b = self.board()
        return {"board_machine": b.get("machine"), "cpu_model": b.get("cpu_model"),
                "cpu_flags": b.get("cpu_flags"), "cores": b.get("cores"),
                "llvm_host_cpu": b.get("llvm_host_cpu"), "emulated": bool(b.get("emulated")),
                "board_tvm": b.get("tvm")}

    def measure_peaks(self, threads: int):
        from pwbench.targets import peaks
        from pwbench.tvm_bridge import peak_kernels, rpc

        notes = [f"measured on the board ({self.rpc}) with kernels TVM compiled for it"]
        if self.emulated:
            notes.append("the board is emulated (qemu): these peaks say nothing of real hardware")
        try:
            flops, nbytes = peak_kernels.measure_on_board(self.toolchain(threads),
                                                          _working_set(self.board()))
        except rpc.BoardError as exc:
            raise UserError(f"target {self.name}: peaks: {exc}") from None
        bound = peaks.physical_flops_bound(self.board().get("cpu_flags") or [],
                                           self.board().get("cores") or 1)
        return peaks.from_candidates(self, threads, flops, nbytes, notes, bound)


def _working_set(facts: dict) -> int:
    """Copy-kernel bytes: 4x the board's last-level cache, at least 64 MiB, at most 1/8 of its
    memory (an emulated board: 64 MiB, its time means nothing anyway)."""
    if facts.get("emulated"):
        return 64 << 20
    want = max(4 * (facts.get("llc_bytes") or 32 << 20), 64 << 20)
    memory = facts.get("memory_bytes")
    return min(want, memory // 8) if memory else want
