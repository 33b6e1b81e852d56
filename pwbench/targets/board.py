"""A board that is not this machine (an aarch64 board, say): kernels are cross-compiled here and
run there, through a TVM RPC tracker."""

from __future__ import annotations

import shutil

from pwbench.targets.base import Target

CROSS_COMPILER = "aarch64-linux-gnu-gcc"


class Board(Target):
    stacks = frozenset({"tvm"})

    def __init__(self, name: str = "arm", tvm_given: str | None = None):
        self.name, self.tvm_given = name, tvm_given
        self.description = "an aarch64 board: kernels cross-compiled here, run over a TVM RPC tracker"
        self.where = "a remote board"

    def tvm_target(self, threads: int) -> dict:
        from pwbench.tvm_bridge import compiler

        given = self.tvm_given or '{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}'
        return compiler.cpu_target(given, threads)

    def build_problem(self) -> str | None:
        if shutil.which(CROSS_COMPILER) is None:
            return (f"the cross compiler {CROSS_COMPILER} is not installed "
                    "(Debian: apt-get install gcc-aarch64-linux-gnu)")
        return None

    def run_problem(self) -> str | None:
        return (f"target {self.name}: measuring on a board needs a TVM RPC tracker, which pwbench "
                "does not support yet; run pwbench with --target cpu on the board itself")

    def facts(self) -> dict:
        return {"hardware": "a remote board (not this machine)"}

    def fingerprint_facts(self) -> dict:
        return {"board": self.name}
