"""Targets: where kernels are built and run (see targets/base.py for what a target says).

`resolve(name, rpc)` turns what the user typed into a Target: a name from TARGETS (`arm` and the
named ARM cores of targets/board.py among them, or `arm:CPU`, or `cuda:N` for GPU N), or a TVM target given in full
(JSON or `llvm -mcpu=...` text), whose kind and triple say which hardware it is. With an RPC
endpoint (--rpc-tracker, --rpc-key) every CPU target is a board reached through the tracker:
`cpu` is then the remote box's CPU, whatever it is."""

from __future__ import annotations

import platform
import re

from pwbench.errors import UserError
from pwbench.toolkits import parse_tvm_target
from pwbench.targets.base import Target
from pwbench.targets.board import ARM_CORES, Board, Endpoint, arm_spec
from pwbench.targets.cuda import CudaGPU
from pwbench.targets.host import HostCPU

__all__ = ["Target", "TARGETS", "resolve", "require_runnable"]

TARGETS = {
    "cpu": lambda: HostCPU("cpu"),
    "x86": lambda: HostCPU("x86", description="the host x86 CPU; TVM derives -mcpu and "
                                              "AVX2/AVX-512 from it"),
    "cuda": lambda: CudaGPU("cuda"),
    "arm": lambda: Board("arm", arm_spec("arm"), description="a generic aarch64 board (NEON): "
                                                             "kernels cross-compiled here, run there "
                                                             "through a TVM RPC tracker"),
    **{core: (lambda core=core: Board(core, arm_spec(core), description=ARM_CORES[core][2]))
       for core in ARM_CORES},
}


def resolve(name: str, rpc: Endpoint | None = None) -> Target:
    """The target `name` (see the module docstring); with `rpc`, reached through that tracker."""
    target = _named(name)
    return target.through(rpc) if rpc is not None else target


def _named(name: str) -> Target:
    if name in TARGETS:
        return TARGETS[name]()
    if re.fullmatch(r"cuda:\d+", name):  # the GPU of that index
        return CudaGPU(name, index=int(name.split(":")[1]))
    if name.startswith("arm:"):
        return Board(name, arm_spec(name))
    spec = parse_tvm_target(name)
    kind = spec.get("kind", "") if isinstance(spec, dict) else ""
    if kind == "cuda":
        return CudaGPU(name, tvm_given=name)
    if kind in ("llvm", "c"):
        triple = str(spec.get("mtriple", ""))
        if triple and not triple.startswith(platform.machine()):
            return Board(name, _given_spec(spec), wants=triple.split("-")[0],
                         description="a board, with a TVM target given in full")
        return HostCPU(name, tvm_given=name, description="the host CPU, with a TVM target given in full")
    raise UserError(
        f"unknown target {name!r}: choose one of {', '.join(TARGETS)}, arm:CPU, or give a TVM "
        "target (e.g. '{\"kind\": \"llvm\", \"mcpu\": \"znver4\"}')"
    )


def _given_spec(spec: dict) -> dict:
    return {k: (v.split(",") if k == "mattr" and isinstance(v, str) else v) for k, v in spec.items()}


def require_runnable(target: Target) -> None:
    """Fail with one clear line when kernels cannot run on the target from here."""
    problem = target.run_problem()
    if problem:
        raise UserError(problem)
