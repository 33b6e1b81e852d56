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
from pwbench.tvm_bridge import layouts
from pwbench.workloads.blocks import Block
from pwbench.workloads.spec import ConvSpec

# what a process that only runs exported kernels sets before `import tvm`
RUNTIME_ENV = {"TVM_USE_RUNTIME_LIB": "1", "TVM_FFI_DISABLE_TORCH_C_DLPACK": "1"}
CLOCKS = {"cpu": "host", "cuda": "cuda-events"}  # the clock a kernel on each device brings


def version() -> str:
    return tvm.__version__


def ffi_version() -> str:
    import tvm_ffi

    return tvm_ffi.__version__


class TvmConv:
    """A compiled conv over tensors allocated once; calling it runs the kernel, nothing else."""

    exact = True  # a direct conv, no Winograd: exact inputs must match bit for bit

    def __init__(self, spec: ConvSpec, function, device):
        self.spec, self.fn = spec, function
        self.x = tvm.runtime.empty(layouts.input_shape(spec), spec.dtype, device)
        self.w = tvm.runtime.empty(layouts.weight_shape(spec), spec.dtype, device)
        self.y = tvm.runtime.empty(layouts.output_shape(spec), spec.dtype, device)
        self.clock = HostClock(self)  # a CPU kernel returns when it is done

    def load(self, x: np.ndarray, w: np.ndarray) -> None:
        self.x.copyfrom(layouts.to_layout(self.spec, x))
        self.w.copyfrom(np.ascontiguousarray(layouts.weight_to_tvm(self.spec, w)))

    def __call__(self) -> None:
        self.fn(self.x, self.w, self.y)

    def result(self) -> np.ndarray:
        return layouts.from_layout(self.spec, self.y.numpy())

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        return (layouts.from_layout(self.spec, self.x.numpy()),
                layouts.weight_from_tvm(self.spec, self.w.numpy()))


class TvmCudaConv:
    """A compiled conv on a GPU, over torch CUDA tensors that TVM sees through DLPack."""

    exact = True  # a direct conv accumulating in fp32: exact inputs must match bit for bit

    def __init__(self, spec: ConvSpec, function, index: int = 0):
        import torch

        self.spec, self.fn, self.torch = spec, function, torch
        dtype, device = getattr(torch, spec.dtype), torch.device("cuda", index)
        torch.cuda.set_device(device)  # torch's events and current stream: this GPU's
        self.x = torch.zeros(layouts.input_shape(spec), dtype=dtype, device=device)
        self.w = torch.zeros(layouts.weight_shape(spec), dtype=dtype, device=device)
        self.y = torch.zeros(layouts.output_shape(spec), dtype=dtype, device=device)
        self.args = [tvm.runtime.from_dlpack(t) for t in (self.x, self.w, self.y)]
        self.clock = CudaEventClock(self)

    def load(self, x: np.ndarray, w: np.ndarray) -> None:
        self.x.copy_(self.torch.from_numpy(layouts.to_layout(self.spec, x)))
        self.w.copy_(self.torch.from_numpy(np.ascontiguousarray(layouts.weight_to_tvm(self.spec, w))))

    def __call__(self) -> None:
        self.fn(*self.args)

    def capture_stream(self):
        """Launch on torch's current stream while in this context (a CUDA graph's capture)."""
        import tvm_ffi

        return tvm_ffi.use_torch_stream()

    def result(self) -> np.ndarray:
        return layouts.from_layout(self.spec, self._host(self.y))

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        return (layouts.from_layout(self.spec, self._host(self.x)),
                layouts.weight_from_tvm(self.spec, self._host(self.w)))

    def _host(self, t) -> np.ndarray:
        self.torch.cuda.synchronize()
        return t.float().cpu().numpy()


def load_kernel(spec: ConvSpec, library: str, device: str, threads: int, index: int = 0):
    """The kernel in an exported library, on this machine's CPU (with `threads` threads) or its
    GPU `index`."""
    if device == "cuda":
        import torch  # first: its CUDA wheels bring libcudart.so.13, which TVM's CUDA library needs

        torch.cuda.init()
        enable_cuda()
        return TvmCudaConv(spec, tvm.runtime.load_module(str(Path(library)))["main"], index)
    return load_cpu_kernel(spec, library, threads)


def load_cpu_kernel(spec: ConvSpec, library: str, threads: int) -> TvmConv:
    """The kernel in an exported library, on this machine's CPU, with `threads` threads."""
    set_threads(threads)
    return TvmConv(spec, tvm.runtime.load_module(str(Path(library)))["main"], tvm.cpu(0))


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


def load_relax_kernel(workload, library: str, threads: int) -> RelaxKernel:
    """The Relax program in an exported library, in a VM on this machine's CPU."""
    from tvm.runtime.vm import VirtualMachine

    set_threads(threads)
    vm = VirtualMachine(tvm.runtime.load_module(str(Path(library))), tvm.cpu(0))
    kernel = RelaxKernel(workload, vm["main"], tvm.cpu(0))
    kernel.vm = vm  # the function lives as long as its VM
    return kernel


class PackedConv(TvmConv):
    """A structured kernel (tvm_bridge/spaces.py): the weight is packed when loaded, once, outside
    the timed call; the activations are in the kernel's layout (NCHW or NHWC: conversions inside
    the kernel, so inside the timed call; NCHWc: blocked end to end, converted when loaded, as a
    network whose layers all use the blocked layout would never convert)."""

    def __init__(self, spec: ConvSpec, function, device, packing: layouts.Packing):
        self.spec, self.fn, self.packing = spec, function, packing
        self.x = tvm.runtime.empty(layouts.packed_input_shape(spec, packing), spec.dtype, device)
        self.w = tvm.runtime.empty(layouts.packed_weight_shape(spec, packing), spec.dtype, device)
        self.y = tvm.runtime.empty(layouts.packed_output_shape(spec, packing), spec.dtype, device)
        self.clock = HostClock(self)

    def load(self, x: np.ndarray, w: np.ndarray) -> None:
        p = self.packing
        self.x.copyfrom(layouts.to_packed(x, p.layout, p.ic_bn))
        self.w.copyfrom(layouts.pack_weight(self.spec, p, w))

    def result(self) -> np.ndarray:
        return layouts.from_packed(self.y.numpy(), self.packing.layout)

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.packing
        return (layouts.from_packed(self.x.numpy(), p.layout),
                layouts.unpack_weight(self.spec, p, self.w.numpy()))


def load_packed_kernel(spec: ConvSpec, library: str, threads: int,
                       packing: layouts.Packing) -> PackedConv:
    set_threads(threads)
    return PackedConv(spec, tvm.runtime.load_module(str(Path(library)))["main"], tvm.cpu(0), packing)
