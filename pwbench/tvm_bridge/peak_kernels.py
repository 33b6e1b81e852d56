"""Peaks of a board, measured there with two small kernels TVM compiles for it (the board may have
no C compiler, no torch and no numpy BLAS; it always has TVM's runtime):

- FMA: one task per thread, each with CHAINS independent vector accumulators (lanes = the
  target's vector width / 32) in registers, updated ITERS times with `acc = acc * x + y`, fused
  multiply-adds (T.fma). FLOPs = 2 x threads x CHAINS x lanes x ITERS per call.
- Copy: b[i] = a[i] over a working set well above the board's last-level cache, parallel over
  threads and vectorized. Bytes = 2 x 4 x N per call (STREAM's convention: write-allocate traffic
  not counted).

Both are timed by the board's own time_evaluator; each figure is the best of a few repeats (what
the board can do, not a typical time), as targets/peak_kernels.py does on this machine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tvm
from tvm.script import tirx as T

from pwbench.tvm_bridge import rpc

CHAINS = 12
ITERS = 1 << 14
REPEATS = 5
MIN_REPEAT_MS = 100


def _lanes(target: dict) -> int:
    from tvm.target import codegen

    try:
        bits = int(codegen.llvm_get_vector_width(tvm.target.Target(target)))
    except Exception:  # noqa: BLE001 - an unknown width: NEON's 128 bits
        bits = 128
    return max(bits // 32, 4)


def fma_kernel(tasks: int, lanes: int, chains: int = CHAINS, iters: int = ITERS):
    @T.prim_func
    def fma(a: T.Buffer((tasks, chains, lanes), "float32")):
        T.func_attr({"global_symbol": "main", "tir.noalias": True})
        for p in T.parallel(tasks):
            acc = T.alloc_buffer((chains, lanes), "float32", scope="local")
            for c in T.unroll(chains):
                for lane in T.vectorized(lanes):
                    acc[c, lane] = a[p, c, lane]
            for _ in range(iters):
                for c in T.unroll(chains):
                    for lane in T.vectorized(lanes):
                        acc[c, lane] = T.fma(acc[c, lane], T.float32(0.9999999), T.float32(1e-7))
            for c in T.unroll(chains):
                for lane in T.vectorized(lanes):
                    a[p, c, lane] = acc[c, lane]

    return fma


def copy_kernel(n: int, block: int):
    @T.prim_func
    def copy(a: T.Buffer((n,), "float32"), b: T.Buffer((n,), "float32")):
        T.func_attr({"global_symbol": "main", "tir.noalias": True})
        for outer in T.parallel(n // block):
            for inner in T.vectorized(block):
                b[outer * block + inner] = a[outer * block + inner]

    return copy


def measure_on_board(toolchain, working_set: int) -> tuple[dict, dict]:
    """({method: FLOP/s}, {method: bytes/s}) measured on a board of a board toolchain's endpoint."""
    endpoint, target, threads = toolchain.endpoint, toolchain.target, toolchain.threads
    lanes = _lanes(target)
    block = lanes * 16
    n = max(working_set // 2 // 4 // block, 1) * block
    with tempfile.TemporaryDirectory(prefix="pwbench-peaks-") as tmp:
        libraries = {}
        for name, func in (("fma", fma_kernel(threads, lanes)), ("copy", copy_kernel(n, block))):
            executable = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(target))
            libraries[name] = str(toolchain.export(executable, Path(tmp) / f"{name}.so"))

        def run():
            session = rpc.open_session(endpoint)
            try:
                rpc.set_threads(session, threads)
                device = session.cpu(0)
                fma = rpc.upload(session, libraries["fma"], endpoint.key)
                acc = tvm.runtime.tensor(np.ones((threads, CHAINS, lanes), "float32"), device)
                fma_s = _best(fma, device, acc)
                copy = rpc.upload(session, libraries["copy"], endpoint.key)
                a = tvm.runtime.empty((n,), "float32", device)
                b = tvm.runtime.empty((n,), "float32", device)
                copy_s = _best(copy, device, a, b)
                return fma_s, copy_s
            finally:
                del session

        fma_s, copy_s = rpc.bounded(run, endpoint.wait_s + endpoint.session_timeout_s + 10,
                                    f"measuring peaks on the board under {endpoint}")
    flops = 2.0 * threads * CHAINS * lanes * ITERS / fma_s
    nbytes = 2.0 * 4 * n / copy_s
    return ({f"FMA kernel (TVM, {lanes * 32}-bit vectors, {CHAINS} chains/thread, on the board)": flops},
            {f"copy (TVM, {2 * 4 * n / 2**20:.0f} MiB working set, on the board)": nbytes})


def _best(module, device, *args) -> float:
    evaluator = module.time_evaluator("main", device, number=1, repeat=REPEATS,
                                      min_repeat_ms=MIN_REPEAT_MS)
    try:
        return float(min(evaluator(*args).results))
    except Exception as exc:  # noqa: BLE001
        raise rpc.BoardError(rpc.describe(exc)) from None
