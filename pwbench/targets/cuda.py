"""An NVIDIA GPU. Its kernels can be *built* on any machine with TVM and nvcc (`pwbench build`, for
an arch given or sm_90); they *run* only where a GPU is visible. Facts and sensors come from NVML
(nvidia-ml-py): name, driver, the CUDA version the driver supports, compute capability, clocks,
power limit; SM clock, temperature and power before and after each kernel is timed. Where NVML
cannot say, the compute capability comes from torch.

A GPU machine is often lent for minutes, so a kernel that hangs is given up after
KERNEL_TIMEOUT_S, and a kernel that leaves a sticky CUDA error (an illegal address: every later
CUDA call in that process fails) ends its worker process (`device_problem`)."""

from __future__ import annotations

import functools
import re
import shutil

from pwbench.errors import UserError
from pwbench.toolkits import cuda_toolkit_version, parse_tvm_target
from pwbench.targets.base import Target
from pwbench.targets.host import HostCPU

ARCH_PATTERN = re.compile(r"sm_\d{2,3}[af]?")
DEFAULT_ARCH = "sm_90"  # what `pwbench build` targets when no GPU is visible and no --arch given
# NVML clock-event reasons that mean the SM clock was held down (nvml.h, nvmlClocksEventReason*)
SLOWDOWNS = {0x4: "power cap", 0x8: "hardware slowdown", 0x20: "thermal (software)",
             0x40: "thermal (hardware)", 0x80: "power brake"}
CLOCK_DROP = 0.95  # an SM clock below 95 % of its value after warm-up counts as throttled
KERNEL_TIMEOUT_S = 90.0  # one kernel's make, check and timing take seconds; 90 s means a hang
STARTUP_TIMEOUT_S = 120.0  # a worker importing torch and TVM's runtime answers within seconds


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
            "gpu_driver_cuda": lambda: _cuda_text(pynvml.nvmlSystemGetCudaDriverVersion_v2()),
        }
        for key, read in optional.items():
            try:
                facts[key] = read()
            except (pynvml.NVMLError, AttributeError):  # not every GPU or driver answers each query
                pass
        return facts
    finally:
        pynvml.nvmlShutdown()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"  # 13000 -> "13.0"


def torch_sees_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _version_tuple(text: str | None) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", text or "")[:2])


def capability(text: str | None) -> tuple[int, int] | None:
    """A compute capability as numbers ('10.0' -> (10, 0)): as text, '10.0' < '8.0'."""
    parts = _version_tuple(text)
    return (parts[0], parts[1] if len(parts) > 1 else 0) if parts else None


def driver_runs_toolkit(driver_cuda: str | None, toolkit: str | None) -> bool:
    """CUDA's minor-version compatibility: SASS built with any 13.x toolkit runs on a driver of
    any CUDA 13.x (the driver must be at least the major release's first; PTX newer than the
    driver would need JIT, and bundles carry SASS for their arch). Unknown versions pass."""
    have, need = _version_tuple(driver_cuda), _version_tuple(toolkit)
    return not have or not need or have[0] >= need[0]


def torch_capability(index: int = 0) -> str | None:
    """'9.0' from torch where NVML cannot say (no nvidia-ml-py, an NVML without the query)."""
    if not torch_sees_gpu():
        return None
    import torch

    return "%d.%d" % torch.cuda.get_device_capability(index)


class Sensors:
    """NVML opened once per process, read around every timed kernel (a few ms at most)."""

    def __init__(self, index: int):
        import pynvml

        pynvml.nvmlInit()
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        self.reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            pynvml.nvmlDeviceGetCurrentClocksThrottleReasons

    def read(self) -> dict:
        nvml, h = self.nvml, self.handle
        readings = {"sm_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
                    "temperature_c": lambda: nvml.nvmlDeviceGetTemperature(
                        h, nvml.NVML_TEMPERATURE_GPU),
                    "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(h) / 1000,
                    "clock_reasons": lambda: int(self.reasons(h))}
        out = {}
        for key, read in readings.items():
            try:
                out[key] = read()
            except nvml.NVMLError:
                pass
        return out


def condition_columns(before: dict, after: dict) -> dict:
    """gpu_<reading>_before/_after, the slowdown reasons NVML gave after timing, and `throttled`:
    the SM clock fell below CLOCK_DROP of its post-warm-up value, or a slowdown reason was set."""
    if not before and not after:
        return {}
    columns = {f"gpu_{k}_{when}": reading.get(k) for k in ("sm_clock_mhz", "temperature_c", "power_w")
               for when, reading in (("before", before), ("after", after))}
    reasons = [name for bit, name in SLOWDOWNS.items() if after.get("clock_reasons", 0) & bit]
    clock0, clock1 = before.get("sm_clock_mhz"), after.get("sm_clock_mhz")
    dropped = bool(clock0 and clock1 is not None and clock1 < CLOCK_DROP * clock0)
    return columns | {"gpu_slowdown": ", ".join(reasons), "throttled": dropped or bool(reasons)}


class CudaGPU(Target):
    stacks = frozenset({"torch", "tvm"})
    min_warmup_ms = 200.0  # idle GPUs sit at low clocks; boost takes tens to hundreds of ms
    kernel_timeout_s, startup_timeout_s = KERNEL_TIMEOUT_S, STARTUP_TIMEOUT_S
    graph_replay = True

    def __init__(self, name: str = "cuda", tvm_given: str | None = None, index: int = 0,
                 arch: str | None = None):
        self.name, self.tvm_given, self.index, self.given_arch = name, tvm_given, index, arch
        self.description = "NVIDIA GPU: PyTorch/cuDNN and TVM CUDA; kernels build without a GPU"
        self.where = f"GPU {index} of this machine"
        self.host = HostCPU()
        self._sensors = self._flush = None

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.index}"

    def __getstate__(self):  # sent to worker processes: no NVML handle, no device buffer
        return self.__dict__ | {"_sensors": None, "_flush": None}

    def with_arch(self, arch: str) -> CudaGPU:
        if not ARCH_PATTERN.fullmatch(arch):
            raise UserError(f"--arch {arch!r} is not an NVIDIA arch like sm_80 or sm_90")
        if self.tvm_given:
            raise UserError("--arch goes with --target cuda; a TVM target given in full names its "
                            "own arch (\"arch\": \"sm_90\")")
        return CudaGPU(self.name, self.tvm_given, self.index, arch)

    def tvm_target(self, threads: int) -> dict:
        from pwbench.tvm_bridge import tvm_targets

        return tvm_targets.cuda_target(self.tvm_given, self.arch() or DEFAULT_ARCH)

    def toolchain(self, threads: int):
        """nvcc here, GPU or not; candidates measured only where the GPU is."""
        from pwbench.tvm_bridge import toolchains

        return toolchains.Cuda(self.tvm_target(threads), threads, self.run_problem(), self.index)

    def compute_capability(self) -> str | None:
        """'9.0': NVML's, else torch's, None without a GPU."""
        return gpu_facts(self.index).get("gpu_compute_capability") or torch_capability(self.index)

    def visible_arch(self) -> str | None:
        """sm_XX from the visible GPU's compute capability, None when there is none."""
        numbers = capability(self.compute_capability())
        return f"sm_{numbers[0]}{numbers[1]}" if numbers else None

    def arch(self) -> str | None:
        """The arch kernels are built for: --arch, else the full TVM target's, else the GPU's."""
        if self.given_arch:
            return self.given_arch
        if self.tvm_given:
            given = parse_tvm_target(self.tvm_given).get("arch")
            if given:
                return str(given)
        return self.visible_arch()

    def build_problem(self) -> str | None:
        if shutil.which("nvcc") is None:
            return "nvcc (the CUDA compiler) is not on PATH: install the CUDA toolkit to build kernels"
        return None

    def run_problem(self) -> str | None:
        if not torch_sees_gpu():
            why = gpu_facts(self.index).get("gpu_error", "no CUDA GPU")
            return (f"target {self.name}: no CUDA GPU is visible on this machine ({why}); build "
                    f"the kernels here with 'pwbench build --target {self.name} --output DIR' and "
                    f"run them on a GPU machine with 'pwbench run --target {self.name} --kernels DIR'")
        return None

    def facts(self) -> dict:
        host = self.host.facts()
        gpu = dict(gpu_facts(self.index))
        if not gpu.get("gpu_compute_capability") and self.compute_capability():
            gpu["gpu_compute_capability"] = self.compute_capability()  # from torch
        line = gpu.get("gpu", "no GPU visible")
        if self.visible_arch():
            line += f" ({self.visible_arch()})"
        return {**host, **gpu, "cuda_toolkit": cuda_toolkit_version(),
                "hardware": f"{line}; host {host['hardware']}"}

    def fingerprint_facts(self) -> dict:
        gpu = gpu_facts(self.index)
        return {"gpu": gpu.get("gpu"), "gpu_driver": gpu.get("gpu_driver"),
                "cpu_model": self.host.fingerprint_facts()["cpu_model"]}

    def tuning_facts(self) -> dict:
        """GPU model and CUDA toolkit (the arch is in the TVM target): a database never serves
        another GPU. Without a GPU here the model is unknown (None) and taken from the database;
        kernels built from it record that GPU, and `kernels_problem` refuses them on another."""
        return {"gpu": gpu_facts(self.index).get("gpu"), "cuda_toolkit": cuda_toolkit_version()}

    def kernel_key(self) -> dict:
        return {"arch": self.arch() or DEFAULT_ARCH}

    def kernels_problem(self, built_for: dict) -> str | None:
        here = self.visible_arch()
        if built_for.get("arch") != here:
            return (f"built for {built_for.get('arch')}, and this GPU "
                    f"({gpu_facts(self.index).get('gpu', '?')}) is {here}: build them again with "
                    f"'pwbench build --target {self.name} --arch {here}'")
        tuned_for, gpu = built_for.get("tuned_for_gpu"), gpu_facts(self.index).get("gpu")
        if tuned_for and tuned_for != gpu:
            return (f"holds schedules tuned on a {tuned_for}, and this GPU is a {gpu}: a tuning "
                    "database is never applied to another GPU")
        supported = gpu_facts(self.index).get("gpu_driver_cuda")
        needed = built_for.get("cuda_toolkit")
        if not driver_runs_toolkit(supported, needed):
            return (f"compiled with CUDA {needed}, and this driver supports CUDA {supported}: "
                    f"kernels of CUDA {_version_tuple(needed)[0]}.x need a driver of that major "
                    "release; update the NVIDIA driver or build with an older CUDA toolkit")
        return None

    def device_problem(self) -> str | None:
        """A sticky CUDA error (illegal address, launch failure) fails every later CUDA call of
        the process; a synchronize shows it."""
        import torch

        if not torch.cuda.is_initialized():
            return None
        try:
            torch.cuda.synchronize(self.index)
        except Exception as exc:  # torch raises RuntimeError / AcceleratorError
            line = next((t for t in str(exc).splitlines() if t.strip()), type(exc).__name__)
            return f"a CUDA error left the process unable to run kernels ({line.strip()[:200]})"
        return None

    def conditions(self) -> dict:
        try:
            if self._sensors is None:
                self._sensors = Sensors(self.index)
            return self._sensors.read()
        except Exception:  # NVML missing or failing must never stop a measurement
            return {}

    def condition_columns(self, before: dict, after: dict) -> dict:
        return condition_columns(before, after)

    def measure_peaks(self, threads: int):
        from pwbench.targets import peak_kernels, peaks

        notes: list[str] = []
        flops = peak_kernels.gemm("cuda", threads, notes) | peak_kernels.cuda_fma(notes)
        by_dtype = {dtype: peak_kernels.gpu_gemm(dtype, notes)
                    for dtype in ("float16", "bfloat16", "tf32")}
        nbytes = peak_kernels.bandwidth("cuda", threads, 1 << 30, notes)
        return peaks.from_candidates(self, threads, flops, nbytes, notes,
                                     by_dtype={d: v for d, v in by_dtype.items() if v})

    def eviction_bytes(self) -> int:
        return 2 * 128 << 20  # above the L2 of every current NVIDIA GPU (H100: 50 MiB, B200: 126 MiB)

    def evict(self) -> None:
        """Zero a buffer of twice the largest L2 (writes evict L2 lines), then wait for it."""
        import torch

        if self._flush is None:
            self._flush = torch.empty(self.eviction_bytes() // 4, dtype=torch.float32,
                                      device=f"cuda:{self.index}")
        self._flush.zero_()
        torch.cuda.synchronize()
