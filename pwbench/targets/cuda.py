"""An NVIDIA GPU. Its kernels can be *built* on any machine with TVM and nvcc; they *run* only
where a GPU is visible. Facts come from NVML (nvidia-ml-py): name, driver, SM count, clocks,
power limit; PyTorch adds the compute capability."""

from __future__ import annotations

import functools
import shutil

from pwbench.targets.base import Target
from pwbench.targets.host import HostCPU


@functools.cache
def gpu_facts(index: int = 0) -> dict:
    """GPU `index` through NVML, or {"gpu_error": why not} when no driver or GPU is there."""
    try:
        import pynvml
    except ImportError:
        return {"gpu_error": "nvidia-ml-py is not installed"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"gpu_error": f"NVML: {exc}"}
    try:
        if pynvml.nvmlDeviceGetCount() <= index:
            return {"gpu_error": "NVML sees no GPU"}
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        facts = {"gpu": _text(pynvml.nvmlDeviceGetName(handle)),
                 "gpu_driver": _text(pynvml.nvmlSystemGetDriverVersion())}
        optional = {
            "gpu_uuid": lambda: _text(pynvml.nvmlDeviceGetUUID(handle)),
            "gpu_memory_bytes": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).total,
            "gpu_max_sm_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(
                handle, pynvml.NVML_CLOCK_SM),
            "gpu_max_memory_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(
                handle, pynvml.NVML_CLOCK_MEM),
            "gpu_power_limit_w": lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000,
            "gpu_compute_capability": lambda: "%d.%d" % pynvml.nvmlDeviceGetCudaComputeCapability(
                handle),
        }
        for key, read in optional.items():
            try:
                facts[key] = read()
            except pynvml.NVMLError:  # not every GPU or driver answers every query
                pass
        return facts
    finally:
        pynvml.nvmlShutdown()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def torch_sees_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class CudaGPU(Target):
    torch_device = "cuda"
    stacks = frozenset({"torch", "tvm"})

    def __init__(self, name: str = "cuda", tvm_given: str | None = None, index: int = 0):
        self.name, self.tvm_given, self.index = name, tvm_given, index
        self.description = "NVIDIA GPU: PyTorch/cuDNN and TVM CUDA; kernels build without a GPU"
        self.where = f"GPU {index} of this machine"
        self.host = HostCPU()

    def tvm_target(self, threads: int) -> dict:
        from pwbench.tvm_bridge import compiler

        return compiler.cuda_target(self.tvm_given, self.arch())

    def arch(self) -> str | None:
        """sm_XX from the visible GPU's compute capability, None when there is none."""
        capability = gpu_facts(self.index).get("gpu_compute_capability")
        return f"sm_{capability.replace('.', '')}" if capability else None

    def build_problem(self) -> str | None:
        if shutil.which("nvcc") is None:
            return "nvcc (the CUDA compiler) is not on PATH: install the CUDA toolkit to build kernels"
        return None

    def run_problem(self) -> str | None:
        if not torch_sees_gpu():
            why = gpu_facts(self.index).get("gpu_error", "no CUDA GPU")
            return (f"target {self.name}: no CUDA GPU is visible on this machine ({why}); run on a "
                    "machine with an NVIDIA GPU and a CUDA build of torch, or use --target cpu")
        return None

    def facts(self) -> dict:
        host = self.host.facts()
        gpu = gpu_facts(self.index)
        line = gpu.get("gpu", "no GPU visible")
        if "gpu_compute_capability" in gpu:
            line += f" (sm_{gpu['gpu_compute_capability'].replace('.', '')})"
        return {**host, **gpu, "hardware": f"{line}; host {host['hardware']}"}

    def fingerprint_facts(self) -> dict:
        gpu = gpu_facts(self.index)
        return {"gpu": gpu.get("gpu"), "gpu_driver": gpu.get("gpu_driver"),
                "cpu_model": self.host.fingerprint_facts()["cpu_model"]}

    def measure_peaks(self, threads: int):
        from pwbench.targets import peak_kernels, peaks

        notes: list[str] = []
        flops = peak_kernels.gemm("cuda", threads, notes)
        nbytes = peak_kernels.bandwidth("cuda", threads, 1 << 30, notes)
        return peaks.from_candidates(self, threads, flops, nbytes, notes)

    def eviction_bytes(self) -> int:
        return 2 * 128 << 20  # above the L2 of every current NVIDIA GPU (H100: 50 MiB, B200: 126 MiB)

    def evict(self) -> None:
        import torch

        if getattr(self, "_flush", None) is None:
            self._flush = torch.empty(self.eviction_bytes() // 4, dtype=torch.float32, device="cuda")
        self._flush.zero_()
        torch.cuda.synchronize()
