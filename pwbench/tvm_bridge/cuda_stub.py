"""A stand-in for the NVIDIA driver (libcuda.so.1) on a machine that has none, so that TVM builds
real CUDA binaries there.

Why: TVM 0.27's CUDA codegen hands the generated source to `ffi.Module.create.cuda`, which lives in
tvm/lib/libtvm_runtime_cuda.so; that library links libcuda.so.1. Without a driver it fails to load
(`import tvm` swallows the error), TVM silently falls back to a *source-only* module, nvcc is never
called, and the exported library would make the GPU machine compile the kernel at load time
(with NVRTC or nvcc, which a runtime-only install lacks). With this stub loaded first, the
library loads, TVM calls `tvm_callback_cuda_compile` (nvcc) at build time, and the exported
library carries a fatbin.

The stub exports the driver functions libtvm_runtime_cuda.so imports (`nm -D --undefined-only`)
plus those cudart probes; every one returns CUDA_ERROR_NO_DEVICE, so nothing can ever run on it.
It is never loaded where a real libcuda.so.1 is found. Built once with the C compiler (~0.1 s)
into the pwbench cache directory.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

from pwbench import env

DRIVER_SYMBOLS = ("cuDeviceGetName", "cuFuncSetAttribute", "cuLaunchKernelEx", "cuModuleGetFunction",
                  "cuModuleLoadData", "cuModuleUnload", "cuTensorMapEncodeTiled")
SOURCE = """
#define CUDA_ERROR_NO_DEVICE 100
static const char *msg = "CUDA_ERROR_NO_DEVICE (pwbench's build-machine stand-in for libcuda)";
int cuGetErrorName(int e, const char **s) { (void)e; *s = msg; return 0; }
int cuGetErrorString(int e, const char **s) { (void)e; *s = msg; return 0; }
int cuInit(unsigned f) { (void)f; return CUDA_ERROR_NO_DEVICE; }
int cuDriverGetVersion(int *v) { *v = 0; return CUDA_ERROR_NO_DEVICE; }
int cuDeviceGetCount(int *n) { *n = 0; return CUDA_ERROR_NO_DEVICE; }
""" + "".join(f"int {name}(void) {{ return CUDA_ERROR_NO_DEVICE; }}\n" for name in DRIVER_SYMBOLS)


def real_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def build(directory: Path | None = None) -> Path:
    directory = Path(directory or env.cache_dir() / "cuda-stub")
    library = directory / "libcuda.so.1"
    if library.exists():
        return library
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("building CUDA kernels without an NVIDIA driver needs a C compiler (cc) "
                           "for pwbench's stand-in libcuda.so.1; none is on PATH")
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "libcuda_stub.c"
    source.write_text(SOURCE)
    partial = directory / f"libcuda.so.1.{os.getpid()}"
    done = subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o",
                           str(partial), str(source)], capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise RuntimeError(f"cannot build the stand-in libcuda.so.1: {done.stderr.strip()[-300:]}")
    os.replace(partial, library)  # atomic: concurrent builders never see half a file
    return library


def load() -> str:
    """Make `libcuda.so.1` resolvable in this process: the real driver when there is one, else the
    stub (loaded RTLD_GLOBAL, so a later NEEDED libcuda.so.1 resolves to it by soname)."""
    if real_driver():
        return "driver"
    ctypes.CDLL(str(build()), mode=ctypes.RTLD_GLOBAL)
    return "stub"
