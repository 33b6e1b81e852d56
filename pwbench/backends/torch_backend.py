"""PyTorch baseline: torch.nn.functional.conv2d, NCHW or channels_last (the spec's NHWC), on the
target's torch device (oneDNN on a CPU, cuDNN on a GPU); a block as its torch module, eager."""

from __future__ import annotations

import functools

import numpy as np
import torch

from pwbench.backends.base import Built, HostClock, NoEvents, Options
from pwbench.workloads.blocks import Block
from pwbench.workloads.spec import ConvSpec

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TorchConv:
    exact = True  # fp32 convolutions, TF32 off: exact inputs must match bit for bit

    def __init__(self, spec: ConvSpec, device: str, threads: int):
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
        sync = None
        if self.device.type == "cuda":
            # fp32 must be fp32: TF32 would fail the exact check by design
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = True
            sync = torch.cuda.synchronize
        self.clock = HostClock(self, sync)

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

    def __init__(self, block, device: str, threads: int):
        from pwbench.workloads.torch_models import BlockModule

        torch.set_num_threads(threads)
        self.spec, self.device = block, torch.device(device)
        self.memory_format = torch.channels_last if block.layout == "NHWC" else torch.contiguous_format
        dtype = _DTYPES[block.dtype]
        self.module = BlockModule(block).to(self.device, dtype, memory_format=self.memory_format).eval()
        self.x = torch.zeros(block.input_shape, dtype=dtype, device=self.device).to(
            memory_format=self.memory_format)
        self.out = None
        self.clock = HostClock(self, torch.cuda.synchronize if self.device.type == "cuda" else None)

    def load(self, x: np.ndarray) -> None:
        self.x.copy_(torch.from_numpy(x))

    def __call__(self) -> None:
        with torch.inference_mode():
            self.out = self.module(self.x)

    def inputs(self) -> tuple[np.ndarray]:
        return (self.x.float().cpu().contiguous().numpy(),)


class Backend:
    name = "torch"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        self.device, self.threads = target.torch_device, options.threads

    def versions(self) -> dict:
        info = {"torch": torch.__version__, "torch_mkldnn": torch.backends.mkldnn.is_available()}
        if self.device == "cuda" and torch.cuda.is_available():
            info |= {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
        return info

    def build(self, workload) -> Built:
        kernel = TorchBlock if isinstance(workload, Block) else TorchConv
        return Built(functools.partial(kernel, workload, self.device, self.threads))
