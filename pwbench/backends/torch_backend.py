"""PyTorch baseline: torch.nn.functional.conv2d, NCHW or channels_last (the spec's NHWC), on the
target's torch device (oneDNN on a CPU, cuDNN on a GPU); a block as its torch module, eager.

On a GPU every kernel, conv or block, sets torch's switches for itself when it is made
(torch_flags.py): `cudnn.benchmark = True`, whose algorithm search on a shape's first call
happens then (three untimed calls), never inside a timed block; TF32 off for fp32 (exact inputs
must then match bit for bit), and on GPUs with TF32 (compute capability 8.0 and up) a `tf32`
variant of every fp32 layer and block with TF32 on, as PyTorch's cuDNN default is, checked with
the TF32 tolerance and drawn against the TF32 roof (`compute` column). The cuDNN kernels a conv
ran are recorded (`cudnn_kernels`, from torch.profiler, asked up to PROFILER_TRIES times: a
session can drop its events); the algorithm they show decides the check (`algorithm`: direct,
winograd, fft, or unknown when none could be seen: then the loosest bound, said in the row's
`check_mode`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from pwbench import torch_flags
from pwbench.backends.base import Built, NoEvents, Options
from pwbench.measure.clocks import CudaEventClock, host_clock
from pwbench.workloads.blocks import Block
from pwbench.workloads.spec import ConvSpec

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}  # an ONNX model of doubles makes float64 layers
SEARCH_CALLS = 3  # untimed calls when made: cudnn.benchmark's search, workspace, lazy init
INEXACT_KERNELS = ("winograd", "fft")  # cuDNN kernel names that show an inexact algorithm
PROFILER_TRIES = 3


class TorchConv:
    exact = True  # fp32 convolutions, TF32 off: exact inputs must match bit for bit
    algorithm = "direct"  # on a GPU: what the cuDNN kernels that ran show (algorithm_of)

    def __init__(self, spec: ConvSpec, device: str, threads: int, tf32: bool = False,
                 clock: str = "host"):
        torch.set_num_threads(threads)
        self.spec = spec
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if spec.layout == "NHWC" else torch.contiguous_format
        dtype = _DTYPES[spec.dtype]
        self.x = torch.zeros(spec.input_shape, dtype=dtype, device=self.device).to(
            memory_format=self.memory_format)
        self.w = torch.zeros(spec.weight_shape, dtype=dtype, device=self.device).to(
            memory_format=self.memory_format)
        self.out = None
        self.compute, self.columns = ("tf32" if tf32 else ""), {}
        if self.device.type == "cuda":
            self.clock = cuda_setup(self, tf32)
            kernels = cuda_kernels(self)
            self.columns["cudnn_kernels"] = "; ".join(kernels) if kernels else "unknown"
            self.algorithm = algorithm_of(kernels)
            self.exact = self.algorithm == "direct"
        else:
            self.clock = host_clock(self, clock)  # timed, or counted by the instruction clock

    def load(self, x: np.ndarray, w: np.ndarray) -> None:
        self.x.copy_(torch.from_numpy(x))
        self.w.copy_(torch.from_numpy(w))

    def __call__(self) -> None:
        s = self.spec
        with torch.inference_mode():
            self.out = torch.nn.functional.conv2d(
                self.x, self.w, None, s.stride, s.padding, s.dilation, s.groups)

    def result(self) -> np.ndarray:
        return self.out.float().cpu().contiguous().numpy()

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        return (self.x.float().cpu().contiguous().numpy(), self.w.float().cpu().contiguous().numpy())


class TorchBlock(TorchConv):
    """A block (workloads/blocks.py) as its eager torch module, its weights fixed by the block."""

    def __init__(self, block, device: str, threads: int, clock: str = "host", tf32: bool = False):
        from pwbench.workloads.torch_models import BlockModule

        torch.set_num_threads(threads)
        self.spec, self.device, self.columns = block, torch.device(device), {}
        self.compute = "tf32" if tf32 else ""
        self.memory_format = torch.channels_last if block.layout == "NHWC" else torch.contiguous_format
        dtype = _DTYPES[block.dtype]
        self.module = BlockModule(block).to(self.device, dtype, memory_format=self.memory_format).eval()
        self.x = torch.zeros(block.input_shape, dtype=dtype, device=self.device).to(
            memory_format=self.memory_format)
        self.out = None
        if self.device.type == "cuda":
            self.clock = cuda_setup(self, tf32)
            kernels = cuda_kernels(self)  # a 3x3 conv of the block may run Winograd
            self.columns["cudnn_kernels"] = "; ".join(kernels) if kernels else "unknown"
            self.algorithm = algorithm_of(kernels)
        else:
            self.clock = host_clock(self, clock)

    def load(self, x: np.ndarray) -> None:
        self.x.copy_(torch.from_numpy(x))

    def __call__(self) -> None:
        with torch.inference_mode():
            self.out = self.module(self.x)

    def inputs(self) -> tuple[np.ndarray]:
        return (self.x.float().cpu().contiguous().numpy(),)


def cuda_setup(kernel, tf32: bool) -> CudaEventClock:
    """A torch kernel on a GPU: its device current (events and streams are per device), its own
    switches, cuDNN's algorithm search done by untimed calls; its clock."""
    torch.cuda.set_device(kernel.device)
    torch_flags.for_cuda_kernel(tf32)
    for _ in range(SEARCH_CALLS):  # cudnn.benchmark times every algorithm on the first
        kernel()
    torch.cuda.synchronize()
    return CudaEventClock(kernel)


def algorithm_of(kernels: list[str]) -> str:
    """The conv algorithm the kernels that ran show: winograd or fft by name, direct (exact on
    exact inputs) otherwise, unknown when none could be seen."""
    names = " ".join(kernels).lower()
    return next((k for k in INEXACT_KERNELS if k in names), "direct" if kernels else "unknown")


def algorithm_exact(kernels: list[str]) -> bool:
    """Whether the kernels that ran compute a direct conv (exact on exact inputs)."""
    return algorithm_of(kernels) == "direct"


def cuda_kernels(call, tries: int = PROFILER_TRIES) -> list[str]:
    """Names of the GPU kernels one call launches (torch.profiler; CUPTI), [] when not visible
    after `tries` profiler sessions (one can drop its events)."""
    for _ in range(tries):
        try:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                call()
                torch.cuda.synchronize()
            names = [e.name for e in prof.events() if str(e.device_type).endswith("CUDA")]
        except Exception:  # the profiler is best effort: CUPTI may be missing or busy
            names = []
        if names:
            return list(dict.fromkeys(names))
    return []


class Backend:
    name = "torch"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        self.device, self.threads = target.torch_device, options.threads
        self.gpu = torch.device(self.device).type == "cuda"
        self.clock = "cuda-events" if self.gpu else "instructions" if \
            options.clock == "instructions" else "host"
        # TF32 exists from compute capability 8.0 (Ampere); the main process sees the GPU here
        self.tf32 = (self.gpu and torch.cuda.is_available()
                     and torch.cuda.get_device_capability(self.device) >= (8, 0))

    def versions(self) -> dict:
        info = {"torch": torch.__version__, "torch_mkldnn": torch.backends.mkldnn.is_available()}
        if self.gpu and torch.cuda.is_available():
            info |= {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
        return info

    def build(self, spec) -> Built | list[Built]:
        """The kernel, and on a GPU with TF32 its `tf32` variant for an fp32 workload."""
        clock, kind = self.clock, TorchBlock if isinstance(spec, Block) else TorchConv
        strict = Built(functools.partial(kind, spec, self.device, self.threads, clock=clock),
                       clock=clock)
        if not (self.tf32 and spec.dtype == "float32"):
            return strict
        return [strict, Built(functools.partial(kind, spec, self.device, self.threads, tf32=True),
                              clock=clock, variant="tf32", columns={"compute": "tf32"})]
