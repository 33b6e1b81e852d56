"""TVM's compiler side (apache-tvm 0.27, whose API moves between minor releases): TVM targets,
ConvSpec -> TOPI compute -> PrimFunc -> compiled and exported library, and MetaSchedule tuning
into a JSON database. Everything here is specific to TVM 0.27 (`tvm.s_tir.meta_schedule`, dict
targets, `tvm.compile`); see README, TVM section. Running a library is runtime.py's job.
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
from pwbench.tvm_bridge import layouts
from pwbench.workloads.spec import ConvSpec

VERSION = tvm.__version__


def versions() -> dict:
    return {"tvm": VERSION}


# ---- targets ---------------------------------------------------------------------------------
def host_cpu() -> str:
    """LLVM's name for this CPU (e.g. znver3); 'native' would silently build generic code."""
    return str(tvm.get_global_func("target.llvm_get_system_cpu")())


def cpu_target(given: str | None, threads: int) -> dict:
    """An LLVM target: the user's full TVM target, else this CPU with -mcpu from LLVM (so AVX2 /
    AVX-512 follow the CPU), with num-cores (MetaSchedule needs it)."""
    spec = _checked(given) if given else {"kind": "llvm", "mcpu": host_cpu()}
    spec.setdefault("num-cores", threads)
    return spec


def check_cpu(mcpu: str, triple: str, target_name: str) -> None:
    """LLVM must know the CPU: an unknown -mcpu does not raise, LLVM logs an error and silently
    builds generic code."""
    from tvm.target import codegen

    if not codegen.llvm_is_valid_cpu(mcpu, triple):
        raise UserError(f"target {target_name}: LLVM does not know the CPU {mcpu!r} for {triple} "
                        "(an ARM core: see `pwbench list targets`)")


def cuda_target(given: str | None, arch: str | None) -> dict:
    """A CUDA target with an llvm host: the user's, else sm_XX of the visible GPU."""
    spec = _checked(given) if given else {"kind": "cuda", "arch": arch or "sm_90"}
    spec.setdefault("host", {"kind": "llvm"})
    return spec


def _checked(text: str) -> dict:
    from pwbench.targets import parse_tvm_target

    try:
        given = tvm.target.Target(parse_tvm_target(text) or text)
    except Exception as exc:  # TVM raises several types for a bad target
        raise UserError(f"TVM rejects target {text!r}: {error_line(exc)}") from None
    # what was given, in TVM's canonical form; the keys and features TVM derives from it stay out
    return {k: _plain(v) for k, v in dict(given.export()).items()
            if v not in ("", (), []) and k != "keys" and not k.startswith("feature.")}


def _plain(value):
    """A TVM export value (String, Array, Map) as plain JSON-able Python."""
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    try:
        return [_plain(v) for v in value]
    except TypeError:
        return value


def target_string(spec: dict) -> str:
    """Canonical text of a target, recorded with every result and part of a database fingerprint."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


# ---- compute ---------------------------------------------------------------------------------
def primfunc(spec: ConvSpec) -> tvm.tirx.PrimFunc:
    """TOPI compute definition of the spec's conv, as a PrimFunc with args (input, weight, out)."""
    x = te.placeholder(layouts.input_shape(spec), spec.dtype, name="x")
    w = te.placeholder(layouts.weight_shape(spec), spec.dtype, name="w")
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


# ---- kernels ---------------------------------------------------------------------------------
def compile_untuned(spec: ConvSpec, target: dict):
    """The TOPI compute with no schedule: TVM's default lowering gives a serial loop nest
    (one thread, LLVM's auto-vectorisation only). This is what `tvm` without tuning means."""
    mod = tvm.IRModule({"main": primfunc(spec)})
    return tvm.compile(mod, target=tvm.target.Target(target))


def compile_scheduled(target: dict, schedule):
    return tvm.compile(schedule.mod, target=tvm.target.Target(target))


def export(executable, path: Path, cross_compiler: str | None = None) -> Path:
    """The compiled kernel as a shared library that TVM's runtime alone can load, linked by
    `cross_compiler` (e.g. aarch64-linux-gnu-gcc) for another machine, else by this one's."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if cross_compiler:
        from tvm.support import cc

        executable.export_library(str(path), fcompile=cc.cross_compiler(cross_compiler))
    else:
        executable.export_library(str(path))
    return path


def error_line(exc: BaseException) -> str:
    """The line of a TVM error that says what went wrong (its last), not LLVM's whole log."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


# ---- MetaSchedule ----------------------------------------------------------------------------
def x86_intrinsics_only() -> None:
    """Register only the x86 tensor intrinsics. `import tvm.s_tir.tensor_intrin` parses those of
    every backend (30-50 s), in the main process and in every builder worker, whose 30 s timeout
    then loses builds. A bare package module in sys.modules makes that import a no-op."""
    intrinsics_only("x86")


def arm_intrinsics_only() -> None:
    """The same for an aarch64 target: its design space looks up the arm_cpu intrinsics (NEON
    dot products) in the tuning process and in the builder workers."""
    intrinsics_only("arm_cpu")


def intrinsics_only(arch: str) -> None:
    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        package = types.ModuleType(name)
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules[name] = package
    importlib.import_module(f"{name}.{arch}")


def _intrinsics_of(target: dict):
    """The initializer that registers the intrinsics a target's design space needs."""
    return arm_intrinsics_only if str(target.get("mtriple", "")).startswith("aarch64") \
        else x86_intrinsics_only


def _ms(target: dict | None = None):
    x86_intrinsics_only()
    if target is not None:
        _intrinsics_of(target)()
    from tvm.s_tir import meta_schedule

    return meta_schedule


def open_database(directory: Path):
    """The JSON database in a directory; a damaged file is a UserError naming it."""
    ms = _ms()
    try:
        return ms.database.JSONDatabase(work_dir=str(directory), module_equality="structural")
    except Exception as exc:  # TVM raises its own error types for a bad file
        raise UserError(f"tuning database {directory} is corrupted ({error_line(exc)}); "
                        "delete that directory to tune again") from None


def best_schedule(database, spec: ConvSpec, target: dict):
    """The best schedule the database holds for this spec, or None."""
    ms = _ms(target)
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
         on_batch, search: SearchSettings = SearchSettings(), board=None) -> None:
    """MetaSchedule tune_tir for one spec into the database in work_dir (records are appended as
    measured, so an interrupted tuning keeps what it found). on_batch(results) gets the list of
    measured seconds (None for a failed candidate) after every batch, and returns False to stop.
    `board`: a target whose kernels run on boards behind an RPC tracker (its `rpc` endpoint and
    `cross_compiler`): candidates are then measured there, one runner worker per board."""
    ms = _ms(target)
    _quiet_tuning_logs()  # every tune_tir resets the level to DEBUG: quiet it again each time
    callback = _batch_callback(ms, on_batch)
    mod = tvm.IRModule({"main": primfunc(spec)})
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50,
                                          enable_cpu_cache_flush=search.cache_flush)
    if board is not None and board.rpc is not None:
        import functools

        from pwbench.tvm_bridge import rpc

        builder = ms.builder.LocalBuilder(
            initializer=_intrinsics_of(target), timeout_sec=60,
            f_export=functools.partial(rpc.export_linked, board.cross_compiler))
        try:
            workers = rpc.boards(board.rpc)
        except rpc.BoardError as exc:
            raise RuntimeError(str(exc)) from None
        runner = rpc.tuning_runner(board.rpc, threads, evaluator, workers)
    else:
        builder = ms.builder.LocalBuilder(initializer=_intrinsics_of(target), timeout_sec=60)
        runner = ms.runner.LocalRunner(evaluator_config=evaluator)
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
    """MetaSchedule logs every batch at INFO to stdout; pwbench shows its own progress.
    tune_tir re-reads its logger's handlers by name into a logging config and crashes on one
    without a name (`'NoneType' object has no attribute 'format'`), e.g. one pytest's log capture
    attaches after a first tuning: only its own two handlers are kept."""
    import logging

    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    logger.setLevel(logging.WARNING)
    for handler in list(logger.handlers):
        if not (handler.get_name() or "").startswith("tvm.s_tir.meta_schedule."):
            logger.removeHandler(handler)
    os.environ.setdefault("TVM_LOG_DEBUG", "0")

