"""A planted slowdown for the compare tests: the torch backend, with every depthwise conv run three
times per call (same result, three times the work). Registered as 'torch' by tests/runs_helper.py,
so its rows pair with a clean run's."""

import functools

from pwbench.backends import torch_backend
from pwbench.backends.base import Built

REPEAT = 3


class SlowConv(torch_backend.TorchConv):
    def __call__(self) -> None:
        for _ in range(REPEAT if self.spec.groups == self.spec.in_channels > 1 else 1):
            super().__call__()


class Backend(torch_backend.Backend):
    def build(self, spec) -> Built:
        return Built(functools.partial(SlowConv, spec, self.device, self.threads))
