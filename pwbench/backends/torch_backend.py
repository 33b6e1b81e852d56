"""PyTorch baseline: torch.nn.functional.conv2d, NCHW or channels_last (the spec's NHWC), on the
target's torch device (oneDNN on a CPU, cuDNN on a GPU); a block as its torch module, eager.

On a GPU: `cudnn.benchmark = True`, and the algorithm search it triggers on a shape's first call
happens when the kernel is made (three untimed calls), never inside a timed block. fp32 runs with
TF32 off (exact inputs must then match bit for bit); on GPUs with TF32 (compute capability 8.0
and up) every fp32 layer also gets a `tf32` variant with TF32 on, as PyTorch's cuDNN default is,
checked with the TF32 tolerance. The cuDNN kernels that ran are recorded (`cudnn_kernels`, from
torch.profiler); where they are Winograd or FFT kernels, or cannot be seen, the exact check
allows the rounding of an inexact algorithm instead of bit equality.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from pwbench.backends.base import Built, NoEvents, Options
from pwbench.measure.clocks import CudaEventClock, host_clock
from pwbench.workloads.blocks import Block
from pwbench.workloads.spec import ConvSpec

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}  # an ONNX model of doubles makes float64 layers
SEARCH_CALLS = 3  # untimed calls when made: cudnn.benchmark's search, workspace, lazy init
INEXACT_KERNELS = ("winograd", "fft")


class TorchConv:
    exact = True  # fp32 convolutions, TF32 off: exact inputs must match bit for bit

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
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True
            self.clock = CudaEventClock(self)
            for _ in range(SEARCH_CALLS):  # cudnn.benchmark times every algorithm on the first
                self()
            torch.cuda.synchronize()
            kernels = cuda_kernels(self)
            self.columns["cudnn_kernels"] = "; ".join(kernels) if kernels else "unknown"
            self.exact = algorithm_exact(kernels)
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

    def __init__(self, block, device: str, threads: int, clock: str = "host"):
        from pwbench.workloads.torch_models import BlockModule

        torch.set_num_threads(threads)
        self.spec, self.device, self.columns = block, torch.device(device), {}
        self.memory_format = torch.channels_last if block.layout == "NHWC" else torch.contiguous_format
        dtype = _DTYPES[block.dtype]
        self.module = BlockModule(block).to(self.device, dtype, memory_format=self.memory_format).eval()
        self.x = torch.zeros(block.input_shape, dtype=dtype, device=self.device).to(
            memory_format=self.memory_format)
        self.out = None
        self.clock = CudaEventClock(self) if self.device.type == "cuda" else host_clock(self, clock)

    def load(self, x: np.ndarray) -> None:
        self.x.copy_(torch.from_numpy(x))

    def __call__(self) -> None:
        with torch.inference_mode():
            self.out = self.module(self.x)

    def inputs(self) -> tuple[np.ndarray]:
        return (self.x.float().cpu().contiguous().numpy(),)


def algorithm_exact(kernels: list[str]) -> bool:
    """Whether the kernels that ran compute a direct conv (exact on exact inputs): not when any
    is a Winograd or FFT kernel, nor when none could be seen."""
    return bool(kernels) and not any(k in name.lower() for name in kernels for k in INEXACT_KERNELS)


def cuda_kernels(call) -> list[str]:
    """Names of the GPU kernels one call launches (torch.profiler; CUPTI), [] when not visible."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
        names = [e.name for e in prof.events() if str(e.device_type).endswith("CUDA")]
    except Exception:  # the profiler is best effort: CUPTI may be missing or busy
        return []
    return list(dict.fromkeys(names))


class Backend:
    name = "torch"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        self.device, self.threads = target.torch_device, options.threads
        self.gpu = torch.device(self.device).type == "cuda"
        self.clock = "cuda-events" if self.gpu else "instructions" if \
            options.clock == "instructions" else "host"
        # TF32 exists from compute capability 8.0 (Ampere); the main process sees the GPU here
        self.tf32 = (self.gpu and torch.cuda.is_available()
                     and torch.cuda.get_device_capability() >= (8, 0))

    def versions(self) -> dict:
        info = {"torch": torch.__version__, "torch_mkldnn": torch.backends.mkldnn.is_available()}
        if self.gpu and torch.cuda.is_available():
            info |= {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
        return info

    def build(self, spec) -> Built | list[Built]:
        clock = self.clock
        if isinstance(spec, Block):
            return Built(functools.partial(TorchBlock, spec, self.device, self.threads, clock=clock),
                         clock=clock)
        make = functools.partial(TorchConv, spec, self.device, self.threads, clock=clock)
        strict = Built(make, clock=clock)
        if not (self.tf32 and spec.dtype == "float32"):
            return strict
        return [strict, Built(functools.partial(TorchConv, spec, self.device, self.threads, True),
                              clock=clock, variant="tf32")]
