"""onnxruntime on the host CPU: the workload's torch module exported to ONNX once (in build), run
by a CPU-execution-provider session made in each measuring process with the run's thread count.

The session is what an application gets from onnxruntime by default: every graph optimization on
(a conv fused with its bias, activation and residual add; NCHWc kernels with the weights packed
once when the session is made), `intra_op_num_threads` = the run's threads, one inter-op thread
and sequential execution, so no backend gets more cores than another. Inputs and the output are
bound once to preallocated arrays (IOBinding): a call runs the graph and allocates nothing.

A single conv's weight is an initializer of the exported graph, as it is in a real model, so that
onnxruntime packs it as it would there; loading a new weight makes a new session (not timed).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from pwbench.backends.base import Built, NoEvents, Options, Unsupported
from pwbench.measure.clocks import HostClock
from pwbench.workloads import torch_models
from pwbench.workloads.blocks import Block


class OrtKernel:
    exact = True  # MLAS convs are direct or GEMM-based fp32 sums, no Winograd

    def __init__(self, workload, model: str, threads: int):
        import onnx

        self.workload, self.threads = workload, threads
        self.proto = onnx.load_from_string(Path(model).read_bytes())
        self.x = np.zeros(workload.input_shape, np.float32)
        self.y = np.zeros(workload.output_shape, np.float32)
        self.w = None
        self.session = None
        if isinstance(workload, Block):  # its weights are the block's, in the graph already
            self._start(self.proto.SerializeToString())
        self.clock = HostClock(self)

    def _start(self, model: bytes) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: its warnings would fill the run's console
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.binding = self.session.io_binding()
        # OrtValues over the arrays themselves: onnxruntime reads x and writes y in place
        self.bound = (ort.OrtValue.ortvalue_from_numpy(self.x), ort.OrtValue.ortvalue_from_numpy(self.y))
        self.binding.bind_ortvalue_input("x", self.bound[0])
        self.binding.bind_ortvalue_output("y", self.bound[1])

    def load(self, x: np.ndarray, w: np.ndarray | None = None) -> None:
        np.copyto(self.x, x)
        if w is not None:
            from onnx import numpy_helper

            self.w = np.array(w, np.float32)
            (init,) = [i for i in self.proto.graph.initializer if i.name == "weight"]
            init.CopyFrom(numpy_helper.from_array(self.w, "weight"))
            self._start(self.proto.SerializeToString())

    def __call__(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def result(self) -> np.ndarray:
        return self.y.copy()

    def inputs(self) -> tuple:
        return (self.x.copy(),) if self.w is None else (self.x.copy(), self.w.copy())


class Backend:
    name = "onnxruntime"

    def __init__(self, target, options: Options = Options(), events=NoEvents()):
        self.options = options

    def versions(self) -> dict:
        import onnx
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}

    def build(self, workload) -> Built:
        why = torch_models.exportable(workload, self.name)
        if why:
            raise Unsupported(why)
        path = Path(self.options.work_dir) / f"{self.name}_{workload.id}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(torch_models.onnx_model(workload))
        return Built(functools.partial(OrtKernel, workload, str(path), self.options.threads))
