"""The only module that imports TVM (apache-tvm 0.27, whose API moves between minor releases).

ConvSpec -> TOPI compute -> PrimFunc -> compiled kernel over prepared tvm.runtime tensors, the
host x86 target, and MetaSchedule tuning into a JSON database. Everything here is specific to
TVM 0.27 (`tvm.s_tir.meta_schedule`, dict targets, `tvm.compile`); see README, TVM section.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
import tvm.ir.utils
from tvm import te, topi

from pwbench.errors import UserError
from pwbench.workloads.spec import ConvSpec
from pwbench.targets import Target

VERSION = tvm.__version__


def versions() -> dict:
    return {"tvm": VERSION}


def set_threads(threads: int) -> None:
    """TVM's pool defaults to half the cores on x86; TVM_NUM_THREADS (set by the runner before
    import) fixes it at start, this call fixes it when the pool is already running."""
    config = tvm.get_global_func("runtime.config_threadpool", True)
    if config is not None:
        config(0, threads)  # affinity mode 0: big cores, as the default


# ---- targets ---------------------------------------------------------------------------------
def host_cpu() -> str:
    """LLVM's name for this CPU (e.g. znver3); 'native' would silently build generic code."""
    return str(tvm.get_global_func("target.llvm_get_system_cpu")())


def target_dict(target: Target, threads: int) -> dict:
    """The TVM target for a pwbench target: the user's full TVM target, else the host CPU with
    -mcpu from LLVM (so AVX2 / AVX-512 follow the CPU) and num-cores (MetaSchedule needs it)."""
    if target.tvm:
        try:
            given = tvm.target.Target(_parse_target(target.tvm))
        except Exception as exc:  # TVM raises several types for a bad target
            raise UserError(f"TVM rejects target {target.tvm!r}: {_first_line(exc)}") from None
        spec = dict(given.export())
    elif target.family == "cpu":
        spec = {"kind": "llvm", "mcpu": host_cpu()}
    else:
        raise UserError(f"the TVM backends do not support {target.family} targets yet")
    spec.setdefault("num-cores", threads)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.items()
            if v not in ("", (), [])}


def target_string(spec: dict) -> str:
    """Canonical text of a target, recorded with every result and part of a database fingerprint."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def _parse_target(text: str) -> dict | str:
    try:
        return json.loads(text)
    except ValueError:  # 'llvm -mcpu=x' text: TVM 0.27 only accepts dicts or tags
        kind, *options = text.split()
        spec = {"kind": kind}
        for opt in options:
            key, _, value = opt.lstrip("-").partition("=")
            spec[key] = value.split(",") if key == "mattr" else value
        return spec


# ---- compute ---------------------------------------------------------------------------------
def primfunc(spec: ConvSpec) -> tvm.tirx.PrimFunc:
    """TOPI compute definition of the spec's conv, as a PrimFunc with args (input, weight, out)."""
    x = te.placeholder(_input_shape(spec), spec.dtype, name="x")
    w = te.placeholder(_weight_shape(spec), spec.dtype, name="w")
    args = (spec.stride, spec.padding, spec.dilation)
    nchw = spec.layout == "NCHW"
    if spec.kind == "depthwise":
        y = (topi.nn.depthwise_conv2d_nchw(x, w, *args, out_dtype=spec.dtype) if nchw else
             topi.nn.depthwise_conv2d_nhwc(x, w, *args, kernel_layout="HWOI", out_dtype=spec.dtype))
    elif spec.groups > 1:
        group = topi.nn.group_conv2d_nchw if nchw else topi.nn.group_conv2d_nhwc
        y = group(x, w, *args, spec.groups, out_dtype=spec.dtype)
    else:
        y = (topi.nn.conv2d_nchw(x, w, *args, out_dtype=spec.dtype) if nchw else
             topi.nn.conv2d_nhwc(x, w, *args, out_dtype=spec.dtype))
    return te.create_prim_func([x, w, y]).with_attr("global_symbol", "main")


def _input_shape(spec: ConvSpec) -> tuple:
    n, c, h, w = spec.input_shape
    return (n, c, h, w) if spec.layout == "NCHW" else (n, h, w, c)


def _weight_shape(spec: ConvSpec) -> tuple:
    o, i, kh, kw = spec.weight_shape
    if spec.kind == "depthwise":  # multiplier m = o / c: (C, m, kh, kw) or HWOI (kh, kw, C, m)
        c, m = spec.in_channels, o // spec.in_channels
        return (c, m, kh, kw) if spec.layout == "NCHW" else (kh, kw, c, m)
    return (o, i, kh, kw) if spec.layout == "NCHW" else (kh, kw, i, o)


def _weight_to_tvm(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """Logical OIHW -> the compute's weight layout (depthwise O = C*m, oc = c*m + q as in torch)."""
    if spec.kind == "depthwise":
        c, m = spec.in_channels, spec.out_channels // spec.in_channels
        w = w.reshape(c, m, *spec.kernel_size)
        return w if spec.layout == "NCHW" else w.transpose(2, 3, 0, 1)
    return w if spec.layout == "NCHW" else w.transpose(2, 3, 1, 0)


def _weight_from_tvm(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    if spec.layout == "NHWC":
        w = w.transpose(2, 3, 0, 1) if spec.kind == "depthwise" else w.transpose(3, 2, 0, 1)
    return w.reshape(spec.weight_shape)


# ---- kernels ---------------------------------------------------------------------------------
class TvmConv:
    """A compiled conv over tensors allocated once; calling it runs the kernel, nothing else."""

    sync = None  # the CPU kernel returns when done
    exact = True  # a direct conv, no Winograd: exact inputs must match bit for bit

    def __init__(self, spec: ConvSpec, executable, target: dict):
        self.spec = spec
        self.target_string = target_string(target)
        dev = tvm.cpu(0)
        self.fn = executable["main"]
        self.x = tvm.runtime.empty(_input_shape(spec), spec.dtype, dev)
        self.w = tvm.runtime.empty(_weight_shape(spec), spec.dtype, dev)
        out = spec.output_shape
        out = out if spec.layout == "NCHW" else (out[0], out[2], out[3], out[1])
        self.y = tvm.runtime.empty(out, spec.dtype, dev)

    def load(self, x: np.ndarray, w: np.ndarray) -> None:
        self.x.copyfrom(np.ascontiguousarray(_to_layout(self.spec, x)))
        self.w.copyfrom(np.ascontiguousarray(_weight_to_tvm(self.spec, w)))

    def __call__(self) -> None:
        self.fn(self.x, self.w, self.y)

    def result(self) -> np.ndarray:
        return _from_layout(self.spec, self.y.numpy())

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        return _from_layout(self.spec, self.x.numpy()), _weight_from_tvm(self.spec, self.w.numpy())


def _to_layout(spec: ConvSpec, a: np.ndarray) -> np.ndarray:
    return a if spec.layout == "NCHW" else a.transpose(0, 2, 3, 1)


def _from_layout(spec: ConvSpec, a: np.ndarray) -> np.ndarray:
    return a if spec.layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def compile_untuned(spec: ConvSpec, target: dict) -> TvmConv:
    """The TOPI compute with no schedule: TVM's default lowering gives a serial loop nest
    (one thread, LLVM's auto-vectorisation only). This is what `tvm` without tuning means."""
    mod = tvm.IRModule({"main": primfunc(spec)})
    return TvmConv(spec, tvm.compile(mod, target=tvm.target.Target(target)), target)


def compile_scheduled(spec: ConvSpec, target: dict, schedule) -> TvmConv:
    return TvmConv(spec, tvm.compile(schedule.mod, target=tvm.target.Target(target)), target)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


# ---- MetaSchedule ----------------------------------------------------------------------------
def x86_intrinsics_only() -> None:
    """Register only the x86 tensor intrinsics. `import tvm.s_tir.tensor_intrin` parses those of
    every backend (30-50 s), in the main process and in every builder worker, whose 30 s timeout
    then loses builds. A bare package module in sys.modules makes that import a no-op."""
    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        package = types.ModuleType(name)
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules[name] = package
    importlib.import_module(name + ".x86")


def _ms():
    x86_intrinsics_only()
    from tvm.s_tir import meta_schedule

    return meta_schedule


def open_database(directory: Path):
    """The JSON database in a directory; a damaged file is a UserError naming it."""
    ms = _ms()
    try:
        return ms.database.JSONDatabase(work_dir=str(directory), module_equality="structural")
    except Exception as exc:  # TVM raises its own error types for a bad file
        raise UserError(f"tuning database {directory} is corrupted ({_first_line(exc)}); "
                        "delete that directory to tune again") from None


def best_schedule(database, spec: ConvSpec, target: dict):
    """The best schedule the database holds for this spec, or None."""
    ms = _ms()
    mod = tvm.IRModule({"main": primfunc(spec)})
    return ms.tir_integration.compile_tir(database, mod, tvm.target.Target(target))


@dataclass(frozen=True)
class SearchSettings:
    """MetaSchedule's search knobs: its defaults, except batches of 32, so that 64 trials give the
    cost model one measured round to learn from. scripts/tuning_settings.py compares settings; on
    2 cores their differences were within the run-to-run luck of the search."""

    batch: int = 32
    population: int = 512
    genetic_iters: int = 4
    cache_flush: bool = False  # flush the CPU caches before each measured candidate


def tune(spec: ConvSpec, target: dict, work_dir: Path, trials: int, threads: int,
         on_batch, search: SearchSettings = SearchSettings()) -> None:
    """MetaSchedule tune_tir for one spec into the database in work_dir (records are appended as
    measured, so an interrupted tuning keeps what it found). on_batch(results) gets the list of
    measured seconds (None for a failed candidate) after every batch, and returns False to stop."""
    ms = _ms()
    _quiet_tuning_logs()  # every tune_tir resets the level to DEBUG: quiet it again each time
    callback = _batch_callback(ms, on_batch)
    mod = tvm.IRModule({"main": primfunc(spec)})
    builder = ms.builder.LocalBuilder(initializer=x86_intrinsics_only, timeout_sec=60)
    runner = ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(
        number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=search.cache_flush))
    strategy = ms.search_strategy.EvolutionarySearch(population_size=search.population,
                                                     genetic_num_iters=search.genetic_iters)
    ms.tune_tir(mod, tvm.target.Target(target), str(work_dir), max_trials_global=trials,
                num_trials_per_iter=min(search.batch, trials), builder=builder, runner=runner,
                strategy=strategy, cost_model="xgb",
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                   callback], num_tuning_cores=threads)


def _batch_callback(ms, on_batch):
    @tvm.ir.utils.derived_object
    class BatchCallback(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, candidates, builder_results, runner_results):
            seconds = [float(np.mean([float(s) for s in r.run_secs]))
                       if r.error_msg is None and r.run_secs else None for r in runner_results]
            if not on_batch(seconds):
                task_scheduler.terminate_task(task_id)

    return BatchCallback()


def _quiet_tuning_logs() -> None:
    """MetaSchedule logs every batch at INFO to stdout; pwbench shows its own progress."""
    import logging

    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    os.environ.setdefault("TVM_LOG_DEBUG", "0")

