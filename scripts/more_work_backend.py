"""A real 10 % slowdown for the regression studies: the torch backend computing each conv over
about 10 % more output channels (and, for a depthwise conv, as many more input channels) and
returning the channels asked for. Same result, about 10 % more work on every call. Registered
as 'torch' by scripts/aa_study.py, scripts/instruction_study.py and tests/test_instructions.py,
so its rows pair with a clean run's; it brings the run's clock (timed, or counted)."""

import functools
import math

import numpy as np
import torch

from pwbench.backends import torch_backend
from pwbench.backends.base import Built

FACTOR = 1.10


class MoreWorkConv(torch_backend.TorchConv):
    def __init__(self, spec, device, threads, clock="host"):
        extra = math.ceil(spec.out_channels * (FACTOR - 1))
        if spec.kind == "depthwise":
            bigger = spec.replace(in_channels=spec.in_channels + extra,
                                  out_channels=spec.out_channels + extra, groups=spec.groups + extra)
        else:
            bigger = spec.replace(out_channels=spec.out_channels + extra * spec.groups)
        super().__init__(bigger, device, threads, clock=clock)
        self.asked = spec

    def load(self, x: np.ndarray, w: np.ndarray) -> None:
        self.x.zero_()
        self.w.zero_()
        self.x[:, : x.shape[1]].copy_(torch.from_numpy(x))
        self.w[: w.shape[0], : w.shape[1]].copy_(torch.from_numpy(w))

    def result(self) -> np.ndarray:
        return super().result()[:, : self.asked.out_channels]

    def inputs(self):
        x, w = super().inputs()
        return x[:, : self.asked.in_channels], w[: self.asked.out_channels]


class Backend(torch_backend.Backend):
    def build(self, spec) -> Built:
        return Built(functools.partial(MoreWorkConv, spec, self.device, self.threads,
                                       clock=self.clock), clock=self.clock)
