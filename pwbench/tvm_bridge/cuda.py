"""TVM kernels for NVIDIA GPUs, built on any machine with nvcc, GPU or not (TVM 0.27).

- `enable()` makes TVM's CUDA codegen produce binaries here: the driver or pwbench's stand-in
  (cuda_stub.py) so libtvm_runtime_cuda.so loads, CUDA_PATH for TVM's nvcc lookup, and our own
  `tvm_callback_cuda_compile` (the stock one needs `with target:` to know the arch and throws the
  ptxas report away).
- `dlight_schedule` runs DLight's default GPU rules itself, in the order of TVM's CUDA pipeline
  (Matmul, GEMV, Reduction, GeneralReduction, Fallback): the first that matches *and compiles*
  wins, and which one it was is recorded (ApplyDefaultSchedule says neither).
- `compile_module` compiles a scheduled module: nvcc builds a fatbin (SASS for the arch plus its
  PTX, so newer GPUs can JIT it) with TVM's own flags and `ptxas -v`, whose report gives each
  device function's registers, shared memory and spills (targets/cuda_resources.py); the launch
  configuration (grid, block, dynamic shared memory) is read from TVM's lowered host code, since
  the exported library does not record it.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import tvm
import tvm_ffi
from tvm import tirx

from pwbench.tvm_bridge import cuda_resources, cuda_stub, runtime
from pwbench.tvm_bridge.kernel import Compiled

DEFAULT_RULES = ("Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback")
NVCC_FLAGS = (  # what tvm.support.nvcc passes in 0.27, the arch aside
    "-O3", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math",
    "--ptxas-options=-v,--register-usage-level=10,--warn-on-local-memory-usage",
    "-diag-suppress=177")  # TVM's codegen leaves unused variables: keep the report readable
TENSOR_CORE_MARKERS = ("wmma::", "mma.sync", "ldmatrix")


class Nvcc:
    """TVM's `tvm_callback_cuda_compile`: source in, fatbin out; keeps what nvcc said."""

    def __init__(self):
        self.arch, self.calls = "sm_90", []

    def command(self, source: Path, output: Path) -> list[str]:
        n = self.arch.removeprefix("sm_")
        return ["nvcc", "--fatbin", "-gencode", f"arch=compute_{n},code=sm_{n}", "-gencode",
                f"arch=compute_{n},code=compute_{n}", *NVCC_FLAGS, "-o", str(output), str(source)]

    def __call__(self, code: str) -> bytearray:
        with tempfile.TemporaryDirectory(prefix="pwbench-nvcc-") as tmp:
            source, output = Path(tmp) / "kernel.cu", Path(tmp) / "kernel.fatbin"
            source.write_text(code)
            command = self.command(source, output)
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode:
                lines = [l for l in (done.stderr or done.stdout).splitlines() if "error" in l]
                raise RuntimeError(f"nvcc failed for {self.arch}: {(lines or ['?'])[0].strip()}")
            fatbin = output.read_bytes()
        self.calls.append({"command": " ".join(command[:-3]), "seconds": seconds, "source": code,
                           "ptxas": done.stdout + done.stderr, "fatbin_bytes": len(fatbin)})
        return bytearray(fatbin)


NVCC = Nvcc()


@functools.cache
def enable() -> str:
    """Once per process, before the first CUDA compile: 'driver' or 'stub' (what libcuda is)."""
    if os.path.isdir("/usr/local/cuda"):
        os.environ.setdefault("CUDA_PATH", "/usr/local/cuda")  # else TVM guesses from a wrapper script
    driver = cuda_stub.load()
    runtime.enable_cuda()
    tvm_ffi.register_global_func("tvm_callback_cuda_compile", NVCC, override=True)
    return driver


def compile_dlight(func, target: dict):
    """DLight's default GPU rules: the first that schedules `func` and compiles."""
    from tvm.s_tir import dlight

    enable()
    tvm_target = tvm.target.Target(target)
    tried, start = [], time.perf_counter()
    for name in DEFAULT_RULES:
        rule_start = time.perf_counter()
        try:
            with tvm_target:
                scheduled = getattr(dlight.gpu, name)().apply(func, tvm_target, False)
        except Exception as exc:  # a rule that raises does not end the search
            tried.append(f"{name}: error {_last_line(exc)}")
            continue
        if scheduled is None:
            tried.append(f"{name}: no match")
            continue
        scheduled = scheduled[0] if isinstance(scheduled, list) else scheduled
        schedule_s = time.perf_counter() - rule_start
        mod = tvm.IRModule({"main": scheduled.mod["main"].with_attr("tirx.is_scheduled", True)})
        try:
            compiled = compile_module(mod, target)
        except Exception as exc:  # its schedule does not compile: try the next rule
            tried.append(f"{name}: does not compile ({_last_line(exc)})")
            continue
        tried.append(f"{name}: scheduled")
        compiled.columns = {"dlight_rule": name, **compiled.columns,
                            "build_s": time.perf_counter() - start}
        compiled.details |= {"rules_tried": tried, "schedule_s": schedule_s}
        return compiled
    raise RuntimeError(f"no DLight rule schedules this conv: {'; '.join(tried)}")


def compile_module(mod, target: dict):
    """A scheduled IRModule compiled for a CUDA target, with its resources and launches."""
    enable()
    tvm_target = tvm.target.Target(target)
    NVCC.arch, NVCC.calls = target.get("arch", "sm_90"), []
    start = time.perf_counter()
    with tvm_target:
        executable = tvm.compile(mod, target=tvm_target)
    compile_s = time.perf_counter() - start
    device = executable.mod.imports[0] if executable.mod.imports else None
    if not NVCC.calls or device is None or device.get_property_mask() != 3:
        raise RuntimeError("TVM did not call nvcc (a source-only CUDA module): libtvm_runtime_cuda "
                           "did not load; see tvm_bridge/cuda_stub.py")
    call = NVCC.calls[-1]
    launches = launch_config(mod, tvm_target)
    resources = {r.kernel: r for r in cuda_resources.parse_ptxas(call["ptxas"])}
    kernels = [_kernel_row(name, launch, resources.get(name), NVCC.arch)
               for name, launch in launches.items()]
    return Compiled(executable, _columns(kernels, call, compile_s, NVCC.arch),
                    {"kernels": kernels, "nvcc_command": call["command"], "source": call["source"],
                     "ptxas_log": call["ptxas"], "compile_s": compile_s})


def _kernel_row(name: str, launch: dict, res, arch: str) -> dict:
    row = {"kernel": name, **launch}
    if res is None:
        return row
    row |= {k: v for k, v in res.to_dict().items() if k not in ("kernel", "arch")}
    threads = launch["threads_per_block"] if isinstance(launch["threads_per_block"], int) else 0
    dynamic = launch["dynamic_shared_bytes"] if isinstance(launch["dynamic_shared_bytes"], int) else 0
    return row | cuda_resources.occupancy(arch, threads, res.registers, res.shared_bytes, dynamic,
                                          res.barriers)


def _columns(kernels: list[dict], call: dict, compile_s: float, arch: str) -> dict:
    """The row columns: the first device function's resources (a conv is one kernel under
    DLight; `device_kernels` says when it is more)."""
    first = kernels[0] if kernels else {}
    return {"cuda_arch": arch, "device_kernels": len(kernels),
            "tensor_cores": any(m in call["source"] for m in TENSOR_CORE_MARKERS),
            "grid": first.get("grid", ""), "block": first.get("block", ""),
            "registers": first.get("registers"),
            "shared_bytes": (first.get("shared_bytes") or 0) + _int(first.get("dynamic_shared_bytes")),
            "spill_bytes": (first.get("spill_store_bytes") or 0) + (first.get("spill_load_bytes") or 0),
            "local_bytes": (first.get("stack_bytes") or 0) + (first.get("local_bytes") or 0),
            "occupancy": first.get("occupancy"), "blocks_per_sm": first.get("blocks_per_sm"),
            "build_s": compile_s, "nvcc_s": call["seconds"]}


def _int(value) -> int:
    return value if isinstance(value, int) else 0


# ---- launch configuration ---------------------------------------------------------------------
_CALL = re.compile(r'T\.call_ffi_kernel\("(\w+)",(.*?)launch_params=\[(.*?)\]', re.S)


def launch_config(mod, tvm_target) -> dict:
    """Grid, block and dynamic shared memory of every kernel launch, read from the lowered host
    function, which ends each launch with one value per launch parameter:
        T.call_ffi_kernel("main_kernel", <buffers>, 98, 8, 16, T.int64(0),
                          launch_params=["blockIdx.x", "threadIdx.x", "threadIdx.y", ...])"""
    from tvm.tirx.build import split_host_device_mods

    bound = tirx.transform.BindTarget(tvm_target.with_host(tvm_target.host))(mod)
    pipeline, _, _ = tirx.get_default_tir_pipeline(tvm_target)  # (pipeline, ...) in 0.27
    host, _ = split_host_device_mods(pipeline(bound))
    found = {}
    for _, func in host.functions.items():
        for name, args, tags in _CALL.findall(func.script()):
            tags = [t.strip().strip('"') for t in tags.split(",") if t.strip()]
            values = dict(zip(tags, [_value(v) for v in _split_args(args)[-len(tags):]]))
            grid = [values.get(f"blockIdx.{a}", 1) for a in "xyz"]
            block = [values.get(f"threadIdx.{a}", 1) for a in "xyz"]
            found[name] = {"grid": "x".join(map(str, grid)), "block": "x".join(map(str, block)),
                           "blocks": _product(grid), "threads_per_block": _product(block),
                           "dynamic_shared_bytes": values.get("tirx.use_dyn_shared_memory", 0)}
    return found


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated items (commas inside brackets belong to their item)."""
    items, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "([") - (ch in ")]")
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    return items + ([current.strip()] if current.strip() else [])


def _value(expr: str):
    m = re.fullmatch(r"(?:T\.int(?:32|64)\()?(\d+)\)?", expr)
    return int(m.group(1)) if m else expr  # a symbolic extent stays text


def _product(values):
    result = 1
    for v in values:
        if not isinstance(v, int):
            return None
        result *= v
    return result


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1].strip() if lines else type(exc).__name__)[:200]
