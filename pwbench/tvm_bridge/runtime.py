"""TVM kernels where they run: a library exported by the compiler, loaded with TVM's runtime only.

A measuring worker imports this module with TVM_USE_RUNTIME_LIB=1 (and the torch DLPack add-on
off), so it loads libtvm_runtime, not the 253 MB compiler; that is also all a GPU box or a board
needs to run a kernel bundle (scripts/make_tvm_runtime.py makes such a TVM). A Relax executable
exported with `export_library` loads the same way: the Relax VM (`tvm.runtime.vm.VirtualMachine`)
is part of libtvm_runtime, and `tvm.relax` (the compiler side) is never imported here.

CUDA: in runtime-only mode `import tvm` does not load tvm/lib/libtvm_runtime_cuda.so (the CUDA
device API and the loader of CUDA modules), so `enable_cuda` loads it. A CUDA kernel's buffers are
torch tensors that TVM sees through DLPack (torch converts every dtype, bfloat16 included). TVM
launches on the FFI's environment stream of the device (TVMFFIEnvGetStream), by default the
legacy default stream, which is also torch's default stream, so CUDA events recorded by torch
bracket the kernel; while a CUDA graph is captured (torch on a capture stream), the kernel's
`capture_stream()` sets the environment stream to torch's current one (tvm_ffi.use_torch_stream).
The kernel runs on the GPU of the target's index.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
import tvm

from pwbench.measure.clocks import CudaEventClock, HostClock
from pwbench.tvm_bridge.kernel import Artifact, BufferKernel
from pwbench.workloads.blocks import Block

# what a process that only runs exported kernels sets before `import tvm`
RUNTIME_ENV = {"TVM_USE_RUNTIME_LIB": "1", "TVM_FFI_DISABLE_TORCH_C_DLPACK": "1"}


def version() -> str:
    return tvm.__version__


def ffi_version() -> str:
    import tvm_ffi

    return tvm_ffi.__version__


class LocalKernel(BufferKernel):
    """An artifact on this machine's CPU, over TVM tensors."""

    def __init__(self, artifact: Artifact, function, device):
        super().__init__(artifact)
        dtype, layout = artifact.workload.dtype, artifact.layout
        self.fn = function
        self.x, self.w, self.y = (tvm.runtime.empty(shape, dtype, device) for shape in
                                  (layout.input_shape, layout.weight_shape, layout.output_shape))
        self.clock = HostClock(self)  # a CPU kernel returns when it is done

    def __call__(self) -> None:
        self.fn(self.x, self.w, self.y)

    def _put(self, buffer, array: np.ndarray) -> None:
        buffer.copyfrom(np.ascontiguousarray(array))

    def _get(self, buffer) -> np.ndarray:
        return buffer.numpy()


class CudaKernel(BufferKernel):
    """An artifact on a GPU, over torch CUDA tensors that TVM sees through DLPack."""

    def __init__(self, artifact: Artifact, function, index: int = 0):
        import torch

        super().__init__(artifact)
        self.fn, self.torch, layout = function, torch, artifact.layout
        dtype, device = getattr(torch, artifact.workload.dtype), torch.device("cuda", index)
        torch.cuda.set_device(device)  # torch's events and current stream: this GPU's
        self.x, self.w, self.y = (torch.zeros(shape, dtype=dtype, device=device) for shape in
                                  (layout.input_shape, layout.weight_shape, layout.output_shape))
        self.args = [tvm.runtime.from_dlpack(t) for t in (self.x, self.w, self.y)]
        self.clock = CudaEventClock(self)

    def __call__(self) -> None:
        self.fn(*self.args)

    def capture_stream(self):
        """Launch on torch's current stream while in this context (a CUDA graph's capture)."""
        import tvm_ffi

        return tvm_ffi.use_torch_stream()

    def _put(self, buffer, array: np.ndarray) -> None:
        buffer.copy_(self.torch.from_numpy(np.ascontiguousarray(array)))

    def _get(self, buffer) -> np.ndarray:
        self.torch.cuda.synchronize()
        return buffer.float().cpu().numpy()


def load(artifact: Artifact, threads: int):
    """The artifact's kernel on this machine's CPU, with `threads` threads (`Built.make` of a
    kernel run here: picklable as a partial of this and plain values)."""
    if artifact.convention == "vm":
        return load_relax_kernel(artifact, threads)
    set_threads(threads)
    return LocalKernel(artifact, _entry(artifact), tvm.cpu(0))


def load_cuda(artifact: Artifact, index: int = 0):
    """The artifact's kernel on this machine's GPU `index`."""
    import torch  # first: its CUDA wheels bring libcudart.so.13, which TVM's CUDA library needs

    torch.cuda.init()
    enable_cuda()
    return CudaKernel(artifact, _entry(artifact), index)


def _entry(artifact: Artifact):
    return tvm.runtime.load_module(str(Path(artifact.library)))[artifact.entry]


@functools.cache
def enable_cuda() -> None:
    """Register TVM's CUDA device API and CUDA module loader, loading libtvm_runtime_cuda.so when
    `import tvm` did not (runtime-only mode, or no driver at import time). It needs libcuda.so.1
    (the NVIDIA driver) and libcudart.so.13, which torch's CUDA wheels or a CUDA toolkit bring."""
    if tvm.runtime.enabled("cuda"):
        return
    library = Path(tvm.__file__).resolve().parent / "lib" / "libtvm_runtime_cuda.so"
    try:
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        if "libcudart" not in str(exc) or not _load_cudart():
            raise RuntimeError(f"TVM's CUDA runtime does not load ({exc}): it needs the NVIDIA "
                               "driver (libcuda.so.1) and the CUDA 13 runtime (libcudart.so.13)"
                               ) from None
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    if not tvm.runtime.enabled("cuda"):
        raise RuntimeError(f"{library} loaded but registered no CUDA device API")


def _load_cudart() -> bool:
    """libcudart.so.13 from torch's nvidia wheels or a CUDA toolkit, loaded by path."""
    places = [Path(os.environ.get("CUDA_PATH", "/usr/local/cuda")) / d for d in ("lib64", "lib")]
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        places += [Path(root) / "cu13" / "lib", Path(root) / "cuda_runtime" / "lib"]
    for place in places:
        candidate = place / "libcudart.so.13"
        if candidate.exists():
            ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
            return True
    return False


def set_threads(threads: int) -> None:
    """TVM's pool defaults to half the cores on x86; TVM_NUM_THREADS (set before import) fixes it
    at start, this call fixes it when the pool is already running."""
    os.environ["TVM_NUM_THREADS"] = str(threads)
    config = tvm.get_global_func("runtime.config_threadpool", True)
    if config is not None:
        config(0, threads)  # affinity mode 0: big cores, as the default


class RelaxKernel:
    """A Relax VM program over input tensors allocated once: `main(x)` for a block (its weights
    are constants in the program), `main(x, weight)` for a conv. Each call returns a new output
    tensor from the VM's pooled allocator (no system allocation once warm)."""

    exact = True  # TOPI's direct convs, no Winograd: exact inputs must match bit for bit

    def __init__(self, workload, function, device):
        self.workload, self.fn = workload, function
        shapes = [workload.input_shape] + ([] if isinstance(workload, Block) else [workload.weight_shape])
        self.args = [tvm.runtime.empty(shape, "float32", device) for shape in shapes]
        self.out = None
        self.clock = HostClock(self)

    def load(self, *arrays: np.ndarray) -> None:
        for tensor, array in zip(self.args, arrays, strict=True):
            tensor.copyfrom(np.ascontiguousarray(array, np.float32))

    def __call__(self) -> None:
        self.out = self.fn(*self.args)

    def result(self) -> np.ndarray:
        return self.out.numpy()

    def inputs(self) -> tuple:
        return tuple(t.numpy() for t in self.args)


def load_relax_kernel(artifact: Artifact, threads: int) -> RelaxKernel:
    """The Relax program of an artifact ("vm" convention), in a VM on this machine's CPU."""
    from tvm.runtime.vm import VirtualMachine

    set_threads(threads)
    vm = VirtualMachine(tvm.runtime.load_module(str(Path(artifact.library))), tvm.cpu(0))
    kernel = RelaxKernel(artifact.workload, vm[artifact.entry], tvm.cpu(0))
    kernel.vm = vm  # the function lives as long as its VM
    return kernel
