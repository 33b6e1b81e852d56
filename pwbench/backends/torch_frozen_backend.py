"""torch as deployed for CPU inference: the weight frozen and pre-packed once for oneDNN, outside
the timed call (`torch.ops.mkldnn._reorder_convolution_weight`), and the conv called through
`torch.ops.mkldnn._convolution_pointwise`. That is the call torch.compile with freezing (and
torch.jit.freeze + optimize_for_inference) emits for a CPU conv, without its Python wrapper;
eager torch re-packs the weight on every call. scripts/torch_inference.py measures eager,
pre-packed, torch.compile (compile time kept, never timed) and oneDNN's own blocked tensors side
by side, which is why this one stands for "the strongest torch" (see README).

Layouts: NHWC is channels_last in and out; NCHW is NCHW in and out: oneDNN returns a
channels_last tensor for NCHW input, made NCHW-contiguous inside the timed call, as an NCHW
consumer needs it."""

from __future__ import annotations

import functools

import torch

from pwbench.backends.base import Built, NoEvents, Options, Unsupported
from pwbench.backends.torch_backend import TorchConv
from pwbench.workloads.spec import ConvSpec


class FrozenConv(TorchConv):
    def load(self, x, w) -> None:
        super().load(x, w)
        s = self.spec
        self.packed = torch.ops.mkldnn._reorder_convolution_weight(
            self.w, list(s.padding), list(s.stride), list(s.dilation), s.groups,
            list(s.input_shape))

    def __call__(self) -> None:
        s = self.spec
        with torch.inference_mode():
            out = torch.ops.mkldnn._convolution_pointwise(
                self.x, self.packed, None, list(s.padding), list(s.stride), list(s.dilation),
                s.groups, "none", [], "")
            self.out = out.contiguous(memory_format=self.memory_format)


class Backend:
    name = "torch-frozen"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        self.device, self.threads = target.torch_device, options.threads
        self.clock = "instructions" if options.clock == "instructions" else "host"

    def versions(self) -> dict:
        return {"torch": torch.__version__, "torch_mkldnn": torch.backends.mkldnn.is_available()}

    def build(self, workload) -> Built:
        if not isinstance(workload, ConvSpec):
            raise Unsupported("torch-frozen builds single convs; a block runs on torch")
        if self.device != "cpu" or not torch.backends.mkldnn.is_available():
            raise Unsupported("torch-frozen pre-packs weights for oneDNN: CPU only (use torch)")
        if workload.dtype != "float32":
            raise Unsupported(f"torch-frozen: float32 only, not {workload.dtype}")
        return Built(functools.partial(FrozenConv, workload, self.device, self.threads,
                                       clock=self.clock), clock=self.clock)
