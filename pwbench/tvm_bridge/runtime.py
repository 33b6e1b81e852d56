"""TVM kernels where they run: a library exported by the compiler, loaded with TVM's runtime only.

A measuring worker imports this module with TVM_USE_RUNTIME_LIB=1 (and the torch DLPack add-on
off), so it loads libtvm_runtime, not the 253 MB compiler; that is also all a GPU box or a board
needs to run a kernel bundle."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tvm

from pwbench.backends.base import HostClock
from pwbench.tvm_bridge import layouts
from pwbench.workloads.spec import ConvSpec

# what a process that only runs exported kernels sets before `import tvm`
RUNTIME_ENV = {"TVM_USE_RUNTIME_LIB": "1", "TVM_FFI_DISABLE_TORCH_C_DLPACK": "1"}


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


def load_cpu_kernel(spec: ConvSpec, library: str, threads: int) -> TvmConv:
    """The kernel in an exported library, on this machine's CPU, with `threads` threads."""
    set_threads(threads)
    return TvmConv(spec, tvm.runtime.load_module(str(Path(library)))["main"], tvm.cpu(0))


def set_threads(threads: int) -> None:
    """TVM's pool defaults to half the cores on x86; TVM_NUM_THREADS (set before import) fixes it
    at start, this call fixes it when the pool is already running."""
    os.environ["TVM_NUM_THREADS"] = str(threads)
    config = tvm.get_global_func("runtime.config_threadpool", True)
    if config is not None:
        config(0, threads)  # affinity mode 0: big cores, as the default


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
