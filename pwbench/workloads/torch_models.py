"""Workloads as torch modules: what the torch backend runs eagerly and what is exported to ONNX
for the other block backends. A block's module computes what workloads/blocks.py evaluates in
NumPy, with the same weights."""

from __future__ import annotations

import torch
from torch import nn

from pwbench.workloads.blocks import Block

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
               "": nn.Identity}


def conv_module(spec, weight=None, bias=None) -> nn.Conv2d:
    conv = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride,
                     spec.padding, spec.dilation, spec.groups, bias=bias is not None)
    with torch.no_grad():
        if weight is not None:
            conv.weight.copy_(torch.from_numpy(weight))
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(bias))
    return conv


class BlockModule(nn.Module):
    def __init__(self, block: Block):
        super().__init__()
        self.block = block
        weights = block.weights()
        self.steps = nn.ModuleList(
            nn.Sequential(conv_module(s.conv, *w), ACTIVATIONS[s.activation]())
            for s, w in zip(block.steps, weights))
        self.shortcut = conv_module(block.shortcut, *weights[-1]) if block.shortcut else None

    def forward(self, x):
        if self.block.kind == "se":
            gate = x.mean(dim=(2, 3), keepdim=True)
            for step in self.steps:
                gate = step(gate)
            return x * gate
        y = x
        for step in self.steps:
            y = step(y)
        if self.block.kind == "bottleneck":
            return torch.relu(y + (self.shortcut(x) if self.shortcut is not None else x))
        return y + x if self.block.residual else y
