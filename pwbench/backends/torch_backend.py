"""PyTorch baseline: torch.nn.functional.conv2d, NCHW or channels_last (the spec's NHWC)."""

from __future__ import annotations

import numpy as np
import torch

from pwbench.workloads.spec import ConvSpec
from pwbench.targets import Target

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def versions() -> dict:
    info = {"torch": torch.__version__, "torch_mkldnn": torch.backends.mkldnn.is_available()}
    if torch.cuda.is_available():
        info |= {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                 "gpu": torch.cuda.get_device_name(0)}
    return info


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


class TorchConv:
    def __init__(self, spec: ConvSpec, device: str):
        self.spec = spec
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if spec.layout == "NHWC" else torch.contiguous_format
        dtype = _DTYPES[spec.dtype]
        self.x = torch.zeros(spec.input_shape, dtype=dtype, device=self.device).to(
            memory_format=self.memory_format)
        self.w = torch.zeros(spec.weight_shape, dtype=dtype, device=self.device).to(
            memory_format=self.memory_format)
        self.out = None
        self.sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        self.exact = True
        if self.device.type == "cuda":
            # fp32 must be fp32: TF32 would fail the exact check by design
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = True

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


def prepare(spec: ConvSpec, target: Target) -> TorchConv:
    return TorchConv(spec, target.torch_device)
