"""TVM kernels on a board behind an RPC tracker: an artifact (kernel.py) uploaded, loaded and
timed there, and MetaSchedule's runner over the boards of a key, for tuning there.

A `RemoteKernel` opens a bounded session on a free board (rpc.py), uploads the library under a
unique name, allocates the buffers there in the artifact's layout (a structured kernel's packed
weight included) and is timed by the board's own time_evaluator; load() sends the inputs, result()
and inputs() read them back, so verify.check runs unchanged. Importable with TVM's runtime library
alone (TVM_USE_RUNTIME_LIB=1), as measuring workers run: the compiler side (MetaSchedule's RPC
runner) is imported inside the functions that need it.
"""

from __future__ import annotations

import functools

import numpy as np
import tvm

from pwbench.measure.clocks import EvaluatorClock
from pwbench.tvm_bridge import rpc
from pwbench.tvm_bridge.kernel import Artifact, BufferKernel
from pwbench.tvm_bridge.rpc import BoardError, describe

class Timer:
    """The board's time_evaluator for `number` calls, made once per number."""

    def __init__(self, module, device, args, entry: str):
        self.module, self.device, self.args, self.entry = module, device, args, entry
        self.evaluators: dict[int, object] = {}

    def __call__(self, number: int) -> float:
        try:
            evaluator = self.evaluators.get(number)
            if evaluator is None:
                evaluator = self.evaluators[number] = self.module.time_evaluator(
                    self.entry, self.device, number=number, repeat=1)
            return float(evaluator(*self.args).mean) * number
        except Exception as exc:  # noqa: BLE001
            raise BoardError(describe(exc)) from None


class RemoteKernel(BufferKernel):
    """An artifact loaded on a board: its buffers live there (see the module docstring)."""

    def __init__(self, artifact: Artifact, threads: int, endpoint):
        super().__init__(artifact)
        self.session = rpc.open_session(endpoint)
        rpc.set_threads(self.session, threads)
        self.module = rpc.upload(self.session, artifact.library, endpoint.key)
        device, layout, dtype = self.session.cpu(0), artifact.layout, artifact.workload.dtype
        try:
            self.fn = self.module[artifact.entry]
            self.x, self.w, self.y = (tvm.runtime.empty(shape, dtype, device) for shape in
                                      (layout.input_shape, layout.weight_shape, layout.output_shape))
        except Exception as exc:  # noqa: BLE001
            raise BoardError(f"cannot allocate the kernel's buffers on the board: {describe(exc)}") from None
        self.clock = EvaluatorClock(Timer(self.module, device, (self.x, self.w, self.y),
                                           artifact.entry))

    @staticmethod
    def _remote(what, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001
            raise BoardError(f"{what}: {describe(exc)}") from None

    def _put(self, buffer, array: np.ndarray) -> None:
        self._remote("sending inputs to the board", buffer.copyfrom, np.ascontiguousarray(array))

    def _get(self, buffer) -> np.ndarray:
        return self._remote("reading the buffers back", buffer.numpy)

    def __call__(self) -> None:
        self._remote("running the kernel on the board", self.fn, self.x, self.w, self.y)

    def close(self) -> None:
        """End the session (the board then frees its buffers and deletes the upload). TVM has no
        call that closes a session: it ends when nothing refers to it, so every reference this
        kernel holds goes, the clock's timer's too (a caller may still hold the clock)."""
        clock = self.__dict__.pop("clock", None)
        if clock is not None:
            clock.timer = None
        for name in ("fn", "x", "w", "y", "module", "session"):
            self.__dict__.pop(name, None)


def load(artifact: Artifact, threads: int, endpoint) -> RemoteKernel:
    """Built.make of a kernel for a board (picklable: a partial of this and plain values)."""
    return RemoteKernel(artifact, threads, endpoint)


# ---- tuning through the tracker (MetaSchedule's RPCRunner) ---------------------------------------
def tuning_runner(endpoint, threads: int, evaluator_config, workers: int):
    """MetaSchedule's RPCRunner with one worker per board under the key, every step bounded:
    sessions come from the bounded tracker client (RPCConfig's own request can block forever),
    inputs are filled from here (a board with TVM's runtime alone lacks the random-fill function),
    the board's thread pool is set to `threads` before each candidate is timed, and the runner's
    process pool has a deadline per candidate (MetaSchedule builds it with none: a frozen board
    would hang tuning)."""
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
    return rpc.open_session(_Plain(*plain))


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

    rpc.set_threads(session, threads)
    return run_evaluator_common(rt_mod, device, evaluator_config, repeated_args)
