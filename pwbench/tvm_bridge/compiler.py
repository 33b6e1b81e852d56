"""TVM's compiler side (apache-tvm 0.27, whose API moves between minor releases): TVM targets,
ConvSpec -> TOPI compute -> PrimFunc -> compiled and exported library, and MetaSchedule tuning
into a JSON database. Everything here is specific to TVM 0.27 (`tvm.s_tir.meta_schedule`, dict
targets, `tvm.compile`); see README, TVM section. Running a library is runtime.py's job.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
import tvm.ir.utils
from tvm import te, topi

from pwbench.errors import UserError
from pwbench.tvm_bridge import layouts
from pwbench.workloads.spec import ConvSpec

VERSION = tvm.__version__


def versions(target: dict | None = None) -> dict:
    """TVM's version, and for a GPU target the CUDA toolkit that compiles its kernels."""
    if target is not None and is_gpu(target):
        from pwbench.targets.cuda import toolkit_version

        return {"tvm": VERSION, "cuda_toolkit": toolkit_version()}
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


CUDA_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152,
               "registers_per_block": 65536}  # every NVIDIA GPU since sm_70, as TVM's tags say


def check_cpu(mcpu: str, triple: str, target_name: str) -> None:
    """LLVM must know the CPU: an unknown -mcpu does not raise, LLVM logs an error and silently
    builds generic code."""
    from tvm.target import codegen

    if not codegen.llvm_is_valid_cpu(mcpu, triple):
        raise UserError(f"target {target_name}: LLVM does not know the CPU {mcpu!r} for {triple} "
                        "(an ARM core: see `pwbench list targets`)")


def cuda_target(given: str | None, arch: str | None) -> dict:
    """A CUDA target with an llvm host: the user's, else sm_XX of the visible GPU, with the
    per-block limits MetaSchedule needs (a device-less target has none: TVM's tags add them)."""
    spec = _checked(given) if given else {"kind": "cuda", "arch": arch or "sm_90"}
    spec.setdefault("host", {"kind": "llvm"})
    for key, value in CUDA_LIMITS.items():
        spec.setdefault(key, value)
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


def is_gpu(target: dict) -> bool:
    return target.get("kind") == "cuda"


def device_of(target: dict) -> str:
    """The device an exported kernel for this TVM target runs on (tvm_bridge.runtime's names)."""
    return "cuda" if is_gpu(target) else "cpu"


# ---- compute ---------------------------------------------------------------------------------
ACCUMULATE = {"float16": "float32", "bfloat16": "float32"}  # as cuDNN does: sums in fp32


def primfunc(spec: ConvSpec) -> tvm.tirx.PrimFunc:
    """TOPI compute definition of the spec's conv, as a PrimFunc with args (input, weight, out).
    Half-precision convs accumulate in float32 and round once to the output dtype, as cuDNN
    does (TOPI's out_dtype=float16 would sum 2304 terms of a 3x3x256 conv in fp16)."""
    x = te.placeholder(layouts.input_shape(spec), spec.dtype, name="x")
    w = te.placeholder(layouts.weight_shape(spec), spec.dtype, name="w")
    args = (spec.stride, spec.padding, spec.dilation)
    acc = ACCUMULATE.get(spec.dtype, spec.dtype)
    nchw = spec.layout == "NCHW"
    if spec.kind == "depthwise":
        y = (topi.nn.depthwise_conv2d_nchw(x, w, *args, out_dtype=acc) if nchw else
             topi.nn.depthwise_conv2d_nhwc(x, w, *args, kernel_layout="HWOI", out_dtype=acc))
    elif spec.groups > 1:
        group = topi.nn.group_conv2d_nchw if nchw else topi.nn.group_conv2d_nhwc
        y = group(x, w, *args, spec.groups, out_dtype=acc)
    else:
        y = (topi.nn.conv2d_nchw(x, w, *args, out_dtype=acc) if nchw else
             topi.nn.conv2d_nhwc(x, w, *args, out_dtype=acc))
    if acc != spec.dtype:
        y = topi.cast(y, spec.dtype)
    return te.create_prim_func([x, w, y]).with_attr("global_symbol", "main")


# ---- kernels ---------------------------------------------------------------------------------
@dataclass
class Compiled:
    """A compiled kernel, the row columns its build adds and facts for a bundle's manifest."""
    executable: object
    columns: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)


def compile_untuned(spec: ConvSpec, target: dict) -> Compiled:
    """What `tvm` without tuning means. CPU: the TOPI compute with no schedule, whose default
    lowering is a serial loop nest (one thread, LLVM's auto-vectorisation only). GPU: DLight's
    default rules, which TVM's CUDA pipeline applies to anything unscheduled (tvm_bridge/cuda.py:
    the rule that scheduled it is the `dlight_rule` column)."""
    if is_gpu(target):
        from pwbench.tvm_bridge import cuda

        return cuda.compile_dlight(primfunc(spec), target)
    mod = tvm.IRModule({"main": primfunc(spec)})
    return Compiled(tvm.compile(mod, target=tvm.target.Target(target)))


def compile_scheduled(target: dict, schedule) -> Compiled:
    if is_gpu(target):
        from pwbench.tvm_bridge import cuda

        return cuda.compile_module(schedule.mod, target)
    return Compiled(tvm.compile(schedule.mod, target=tvm.target.Target(target)))


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


def meta_schedule(target: dict | None = None):
    """tvm.s_tir.meta_schedule, with only the tensor intrinsics of x86 (and of the target's
    architecture, when one is given) registered."""
    x86_intrinsics_only()
    if target is not None:
        _intrinsics_of(target)()
    from tvm.s_tir import meta_schedule

    return meta_schedule


def open_database(directory: Path):
    """The JSON database in a directory; a damaged file is a UserError naming it."""
    ms = meta_schedule()
    try:
        return ms.database.JSONDatabase(work_dir=str(directory), module_equality="structural")
    except Exception as exc:  # TVM raises its own error types for a bad file
        raise UserError(f"tuning database {directory} is corrupted ({error_line(exc)}); "
                        "delete that directory to tune again") from None


UNMEASURED_S = 1e9  # MetaSchedule stores 1e10 s for a candidate whose run failed


def best_schedule(database, spec: ConvSpec, target: dict):
    """The best *measured* schedule the database holds for this spec, or None. Records whose run
    failed (MetaSchedule keeps them with run_secs = 1e10, e.g. candidates of a tuning that could
    not run them) are skipped: a query would otherwise return an unmeasured schedule."""
    meta_schedule(target)
    mod = tvm.IRModule({"main": primfunc(spec)})
    if not database.has_workload(mod):
        return None
    records = [r for r in database.get_top_k(database.commit_workload(mod), 16)
               if r.run_secs and max(float(s) for s in r.run_secs) < UNMEASURED_S]
    if not records:
        return None
    try:
        return _replay(mod, records[0].trace)
    except Exception:  # a tensor-core trace needs the CUDA tensor intrinsics (a minute to load)
        if not is_gpu(target):
            raise
        importlib.import_module("tvm.s_tir.tensor_intrin.cuda")
        return _replay(mod, records[0].trace)


def _replay(mod, trace):
    schedule = tvm.s_tir.Schedule(mod)
    trace.apply_to_schedule(schedule, remove_postproc=False)
    return schedule


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
    ms = meta_schedule(target)
    quiet_tuning_logs()  # every tune_tir resets the level to DEBUG: quiet it again each time
    stopper = Stopper()
    callback = _batch_callback(ms, on_batch, stopper)
    mod = tvm.IRModule({"main": primfunc(spec)})
    strategy = ms.search_strategy.EvolutionarySearch(population_size=search.population,
                                                     genetic_num_iters=search.genetic_iters)
    stopper.run(ms.tune_tir, mod, tvm.target.Target(target), str(work_dir), max_trials_global=trials,
                num_trials_per_iter=min(search.batch, trials), builder=local_builder(target, board),
                runner=local_runner(search, target, board, threads), strategy=strategy,
                cost_model="xgb",
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                   callback], num_tuning_cores=threads)


def build_cuda_candidate(mod, target, _params):
    """A builder worker's build of one CUDA candidate: MetaSchedule's default_build without its
    import of every tensor intrinsic (27-50 s per worker), through pwbench's nvcc callback (the
    stock one needs `with target:`), returning a runtime module."""
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from pwbench.tvm_bridge import cuda

    cuda.enable()
    cuda.NVCC.arch = str(target.attrs["arch"])
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.tirx.build(mod, target=target)


class Stopper:
    """Ends a tuning from a measure callback. MetaSchedule's own way, terminate_task, fails its
    check when the task being joined is the one its scheduler terminates next (the joins after
    its main loop ends), so the callback raises instead; the batch being joined is already in the
    database (the default callbacks, AddToDatabase first, run before ours), and the error that
    crosses TVM's FFI (a RuntimeError) is swallowed here only when it is this stop."""

    def __init__(self):
        self.stopped = False

    def stop(self):
        self.stopped = True
        raise RuntimeError("pwbench stops this tuning (budget spent or interrupted)")

    def run(self, tune, *args, **kwargs) -> None:
        try:
            tune(*args, **kwargs)
        except Exception:
            if not self.stopped:
                raise


def local_builder(target: dict, board=None):
    """Builds candidates in worker processes that register only the intrinsics of x86 and the
    target's architecture (they import this module by name: pwbench must be importable there, as
    it is once installed); for a board, linked by its cross compiler."""
    ms = meta_schedule(target)
    if is_gpu(target):  # the CUDA design space's rules use the tensor-core intrinsics
        importlib.import_module("tvm.s_tir.tensor_intrin.cuda")  # 34-123 s, once per process
        return ms.builder.LocalBuilder(f_build=build_cuda_candidate,
                                       initializer=x86_intrinsics_only, timeout_sec=120)
    if board is not None and board.rpc is not None:
        from pwbench.tvm_bridge import rpc

        return ms.builder.LocalBuilder(initializer=_intrinsics_of(target), timeout_sec=60,
                                       f_export=functools.partial(rpc.export_linked,
                                                                  board.cross_compiler))
    return ms.builder.LocalBuilder(initializer=_intrinsics_of(target), timeout_sec=60)


def local_runner(search: SearchSettings, target: dict, board=None, threads: int = 1):
    """Measures candidates here, or on the boards of a board's RPC endpoint (one runner worker
    per board)."""
    ms = meta_schedule(target)
    evaluator = ms.runner.EvaluatorConfig(
        number=3, repeat=1, min_repeat_ms=50,
        enable_cpu_cache_flush=search.cache_flush and not is_gpu(target))
    if board is not None and board.rpc is not None:
        from pwbench.tvm_bridge import rpc

        try:
            workers = rpc.boards(board.rpc)
        except rpc.BoardError as exc:
            raise RuntimeError(str(exc)) from None
        return rpc.tuning_runner(board.rpc, threads, evaluator, workers)
    return ms.runner.LocalRunner(evaluator_config=evaluator)


def batch_seconds(runner_results) -> list:
    """Measured seconds of each candidate of a batch (mean of its repeats), None for a failure."""
    return [float(np.mean([float(s) for s in r.run_secs]))
            if r.error_msg is None and r.run_secs else None for r in runner_results]


def _batch_callback(ms, on_batch, stopper: Stopper):
    @tvm.ir.utils.derived_object
    class BatchCallback(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, candidates, builder_results, runner_results):
            if not on_batch(batch_seconds(runner_results)):
                stopper.stop()

    return BatchCallback()


def key(spec) -> str:
    """A TOPI layer's key in a tuning database's layers.json."""
    return spec.id


class LayerTuner:
    """What database.ensure_tuned needs to tune one conv's TOPI PrimFunc (tvm-tuned)."""

    def __init__(self, spec: ConvSpec, target: dict, board=None):
        self.spec, self.target, self.board = spec, target, board
        self.key = key(spec)

    def tune(self, work_dir, trials: int, threads: int, on_batch) -> None:
        tune(self.spec, self.target, work_dir, trials, threads,
             lambda seconds: on_batch(seconds, None, None), board=self.board)

    def best(self, db):
        """The best schedule the database holds, or None."""
        return best_schedule(db.open_tvm(), self.spec, self.target)


def quiet_tuning_logs() -> None:
    """MetaSchedule logs every batch at INFO to stdout; pwbench shows its own progress.

    Before each tuning, MetaSchedule rebuilds its loggers (logging.dictConfig) listing the
    handlers its global logger has *by name*; a nameless handler there makes that fail ("'NoneType'
    object has no attribute 'format'"), so a second tuning in one process fails wherever someone
    attached one: pytest does, to every non-propagating logger (its log capture). Nameless
    handlers are dropped from MetaSchedule's loggers here; its own are named."""
    import logging

    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("tvm.s_tir.meta_schedule") and isinstance(logger, logging.Logger):
            for handler in [h for h in logger.handlers if h.get_name() is None]:
                logger.removeHandler(handler)
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    os.environ.setdefault("TVM_LOG_DEBUG", "0")

