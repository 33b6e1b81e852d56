"""Workloads as torch modules: what the torch backend runs eagerly and what is exported to ONNX
for the other block backends. A block's module computes what workloads/blocks.py evaluates in
NumPy, with the same weights."""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from pwbench.workloads.blocks import Block
from pwbench.workloads.spec import ConvSpec

ONNX_OPSET = 17

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


def module(workload) -> nn.Module:
    """A block's module with its weights, or a conv's (bias-free, zero weight: its kernels are
    loaded with the weight they are checked and timed with)."""
    if isinstance(workload, Block):
        return BlockModule(workload)
    return conv_module(workload)


def onnx_model(workload) -> bytes:
    """The workload's module exported to ONNX with static shapes: input `x` (logical NCHW), output
    `y`; a conv's weight is the initializer `weight`. The TorchScript exporter (dynamo=False)
    needs only the onnx package; dynamo=True would need onnxscript."""
    if workload.layout != "NCHW" or workload.dtype != "float32":
        raise ValueError("ONNX exports are made for float32 NCHW workloads only")
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # "legacy TorchScript-based ONNX export" is the point
        torch.onnx.export(module(workload).eval(), (torch.zeros(workload.input_shape),), buffer,
                          dynamo=False, opset_version=ONNX_OPSET, input_names=["x"],
                          output_names=["y"], do_constant_folding=False)
    return buffer.getvalue()


def exportable(workload, backend: str) -> str | None:
    """Why a backend that runs the ONNX export cannot run this workload, or None."""
    if workload.layout != "NCHW":
        return (f"{backend} runs ONNX graphs, which are NCHW: an NHWC workload would time "
                "layout transposes, not the conv")
    if workload.dtype != "float32":
        return f"{backend} runs float32 exports; this workload is {workload.dtype}"
    if not isinstance(workload, (Block, ConvSpec)):
        return f"{backend} runs blocks and convs, not {type(workload).__name__}"
    return None
