"""The compiled-kernel artifact: what every place that runs a TVM kernel loads, and the one
kernel class they share.

An `Artifact` is an exported library plus what it takes to call it: its entry point and calling
convention, the device it runs on, and its layout (layouts.Plain or layouts.Packed: buffer
shapes and the packing of the logical arrays into them). Two conventions:
- "dps" (destination passing): `entry(input, weight, output)`, the three buffers allocated once
  by the caller; a workspace, if the kernel needs one, comes from the runtime's allocator (TVM's,
  or the instruction clock's C pool). Single convs, TOPI's or the structured spaces'.
- "vm": a Relax VM program, `main(input[, weight]) -> output` (a block's weights are constants
  of the program); runtime.py runs it on this machine's CPU.

Every place loads the same artifact: this machine's TVM runtime (runtime.py), a board through an
RPC session (rpc.py), the instruction clock's C entry point (ffi_kernel.py), a kernel bundle built
elsewhere (store/bundle.py keeps `to_dict()` in its manifest). Where the buffers live differs,
so `BufferKernel` does the layout's conversions once and asks its subclass only to allocate,
copy in and copy out. NumPy only: no TVM is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pwbench.tvm_bridge import layouts

CONVENTIONS = ("dps", "vm")


@dataclass
class Compiled:
    """A compiled kernel before export (a TVM executable), the row columns its build adds and
    facts for a bundle's manifest (a CUDA kernel's launches, source and ptxas report)."""
    executable: object
    columns: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    workload: object  # a ConvSpec, or a Block for a Relax program
    library: str
    layout: layouts.Plain | layouts.Packed | None  # None: a VM program (no buffers of ours)
    device: str = "cpu"  # "cpu" or "cuda"
    entry: str = "main"
    convention: str = "dps"

    def to_dict(self) -> dict:
        """Everything but the workload and library (a bundle keeps those on their own)."""
        layout = self.layout
        described = None if layout is None else (
            {"kind": "plain"} if isinstance(layout, layouts.Plain) else
            {"kind": "packed", "layout": layout.layout, "ic_bn": layout.ic_bn, "oc_bn": layout.oc_bn})
        return {"layout": described, "device": self.device, "entry": self.entry,
                "convention": self.convention}

    @classmethod
    def from_dict(cls, workload, library: str, data: dict) -> Artifact:
        described = data.get("layout") or {"kind": "plain"}
        layout = (layouts.Plain(workload) if described["kind"] == "plain" else
                  layouts.Packed(workload, described["layout"], int(described["ic_bn"]),
                                 int(described["oc_bn"])))
        return cls(workload, library, layout, data.get("device", "cpu"), data.get("entry", "main"),
                   data.get("convention", "dps"))


class BufferKernel:
    """A "dps" kernel over three buffers allocated once; calling it runs the kernel, nothing else.
    Subclasses set `self.x, self.w, self.y` (from `self.layout`'s shapes), `self.clock`, and
    implement `_put(buffer, array)`, `_get(buffer) -> ndarray` and `__call__`."""

    exact = True  # direct convs, no Winograd: exact inputs must match bit for bit

    def __init__(self, artifact: Artifact):
        self.artifact, self.layout, self.spec = artifact, artifact.layout, artifact.workload

    def load(self, x: np.ndarray, w: np.ndarray) -> None:
        self._put(self.x, self.layout.to_input(x))
        self._put(self.w, self.layout.pack_weight(w))

    def result(self) -> np.ndarray:
        return self.layout.from_output(self._get(self.y))

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        return (self.layout.from_input(self._get(self.x)),
                self.layout.unpack_weight(self._get(self.w)))

    def _put(self, buffer, array: np.ndarray) -> None:
        raise NotImplementedError

    def _get(self, buffer) -> np.ndarray:
        raise NotImplementedError
