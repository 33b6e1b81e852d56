"""Kernels from a kernel bundle (store/bundle.py), built elsewhere by `pwbench build`: nothing is
compiled here, each kernel is an artifact (its library, entry point and layout, a structured
kernel's packing included) loaded by the target's toolchain, with TVM's runtime alone: a GPU
machine without TVM's compiler (or nvcc), or a board over RPC, runs them. Rows keep the backend
name the kernels were built by (`tvm`, `tvm-tuned`) and every column their build recorded, plus
`kernel_bundle`."""

from __future__ import annotations

from pwbench.backends.base import Built, NoEvents, Options
from pwbench.store import bundle as bundles
from pwbench.tvm_bridge import runtime
from pwbench.tvm_bridge.kernel import Artifact
from pwbench.workloads.spec import ConvSpec


class Backend:
    def __init__(self, target, options: Options, events=NoEvents(), *, kit: bundles.Bundle,
                 name: str):
        """Refuses, in one line, a bundle for another arch, GPU, CUDA or TVM version."""
        bundles.check_runtime(kit, runtime.version(), target, runtime.ffi_version())
        self.kit, self.name = kit, name
        self.toolchain = target.toolchain(options.threads)  # loads on the target's GPU index

    def versions(self) -> dict:
        return {"tvm": runtime.version(), "tvm_ffi": runtime.ffi_version(),
                "kernel_bundle": str(self.kit.dir),
                "cuda_toolkit": self.kit.built_for.get("cuda_toolkit")}

    def build(self, spec: ConvSpec) -> Built | list[Built]:
        kernels = self.kit.kernel(spec.id, self.name)
        if not kernels:
            raise RuntimeError(f"kernel bundle {self.kit.dir} holds no {self.name} kernel for {spec.id}")
        return [self._built(spec, k) for k in kernels]

    def _built(self, spec: ConvSpec, kernel: bundles.Kernel) -> Built:
        if kernel.error:
            raise RuntimeError(f"its build failed when the bundle was made: {kernel.error}")
        library = str(bundles.library_path(self.kit.dir, kernel))
        artifact = Artifact.from_dict(spec, library, kernel.artifact | {"device": kernel.device})
        return Built(self.toolchain.make(artifact), clock=kernel.clock, variant=kernel.variant,
                     columns=kernel.columns | {"kernel_bundle": str(self.kit.dir)},
                     runtime_env=self.toolchain.runtime_env)
