"""The CUDA target's pieces that need neither a GPU nor TVM: ptxas reports and occupancy, NVML
readings turned into a throttled flag, the half-precision and TF32 tolerance model, GPU roofs per
dtype, and the one-line refusal of `pwbench run --target cuda` without a GPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pwbench.analysis import roofline
from pwbench.backends import torch_backend
from pwbench.measure import verify
from pwbench.workloads import reference
from pwbench.targets import cuda, peaks
from pwbench.tvm_bridge import cuda_resources
from pwbench.workloads.spec import ConvSpec

PTXAS = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'main_kernel' for 'sm_90'
ptxas info    : Function properties for main_kernel
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 9216 bytes smem
ptxas info    : Compiling entry function 'main_kernel_1' for 'sm_90'
ptxas info    : Function properties for main_kernel_1
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 255 registers
"""


@pytest.mark.unit
def test_ptxas_reports_are_parsed_per_entry_function():
    first, second = cuda_resources.parse_ptxas(PTXAS)
    assert (first.kernel, first.arch, first.registers, first.shared_bytes, first.barriers) == (
        "main_kernel", "sm_90", 40, 9216, 1)
    assert (first.stack_bytes, first.spill_store_bytes, first.spill_load_bytes) == (8, 4, 12)
    assert (second.kernel, second.registers, second.shared_bytes, second.barriers) == (
        "main_kernel_1", 255, 0, 0)


@pytest.mark.unit
@pytest.mark.parametrize("arch, threads, regs, smem, blocks, occupancy, limit", [
    # 32 regs x 32 = 1024 per warp: 16 warps per sub-partition, 64 per SM; 8 blocks of 8 warps
    ("sm_90", 256, 32, 0, 8, 1.0, "warps"),
    # 128 regs: 4096 per warp, 4 warps per sub-partition: 16 warps = 4 blocks of 4 warps, 25 %
    ("sm_80", 128, 128, 0, 4, 0.25, "registers"),
    # 40 regs x 32 = 1280 -> 12 warps per sub-partition, 48 per SM: one 32-warp block, 50 %
    ("sm_90", 1024, 40, 0, 1, 0.5, "registers"),
    # 48 KB + 1 KB reserved per block: 164 KB / 49 KB = 3 blocks on an A100 SM
    ("sm_80", 128, 32, 48 << 10, 3, 3 * 4 / 64, "shared memory"),
    # the same block on an H100 SM (228 KB): 4 blocks
    ("sm_90", 128, 32, 48 << 10, 4, 4 * 4 / 64, "shared memory"),
])
def test_occupancy_follows_the_cuda_occupancy_calculator(arch, threads, regs, smem, blocks,
                                                         occupancy, limit):
    got = cuda_resources.occupancy(arch, threads, regs, smem)
    assert got["blocks_per_sm"] == blocks and got["occupancy"] == pytest.approx(occupancy)
    assert limit in got["limited_by"]


@pytest.mark.unit
def test_occupancy_of_an_unknown_arch_is_nan_not_a_guess():
    got = cuda_resources.occupancy("sm_75", 256, 32, 0)
    assert math.isnan(got["occupancy"]) and got["limited_by"] == "unknown arch"


@pytest.mark.unit
def test_throttling_is_a_clock_drop_or_a_slowdown_reason():
    warm = {"sm_clock_mhz": 1980, "temperature_c": 50, "power_w": 400, "clock_reasons": 0}
    steady = cuda.condition_columns(warm, warm | {"temperature_c": 55})
    assert steady["throttled"] is False and steady["gpu_temperature_c_after"] == 55
    dropped = cuda.condition_columns(warm, warm | {"sm_clock_mhz": 1700})
    assert dropped["throttled"] is True and dropped["gpu_slowdown"] == ""
    capped = cuda.condition_columns(warm, warm | {"clock_reasons": 0x4 | 0x1})  # power cap, idle
    assert capped["throttled"] is True and capped["gpu_slowdown"] == "power cap"
    assert cuda.condition_columns({}, {}) == {}  # no NVML: no columns, no claim


# ---- the tolerance model ---------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("dtype, k, amplitude", [
    ("float32", 9 * 4096, 3), ("float16", 227, 3), ("float16", 228, 2), ("float16", 2048, 1),
    ("float16", 2304, None), ("bfloat16", 28, 3), ("bfloat16", 64, 2), ("bfloat16", 256, 1),
    ("bfloat16", 576, None),
])
def test_exact_inputs_keep_every_sum_exact_in_the_dtype(dtype, k, amplitude):
    spec = ConvSpec(1, k, 4, 3, 3, 1, dtype=dtype)  # a pointwise conv: K = in_channels
    assert reference.exact_amplitude(spec.dtype, spec.reduction_length) == amplitude
    x, _ = spec.example_inputs("exact", 0)
    assert np.abs(x).max() == (amplitude or 1)


@pytest.mark.unit
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_rounding_to_half_dtypes_matches_torch(dtype):
    a = np.random.default_rng(3).uniform(-60000, 60000, 10000).astype(np.float32)
    a[:4] = [1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-11, 2**-130]  # ties (bf16, fp16), a subnormal
    expected = torch.from_numpy(a).to(getattr(torch, dtype)).float().numpy()
    np.testing.assert_array_equal(reference.round_to(dtype, a), expected)


class Emulated:
    """A conv that computes as some hardware would: inputs as the kernel holds them, products
    (optionally from TF32-truncated inputs) summed in fp32 or in the dtype itself, the output
    rounded once; `compute` is what it declares to the checker."""

    exact = True

    def __init__(self, spec, accumulate="float32", truncate_tf32=False, compute=""):
        self.spec, self.accumulate = spec, accumulate
        self.truncate, self.compute = truncate_tf32, compute

    def load(self, x, w):
        self.x, self.w = reference.round_to(self.spec.dtype, x), reference.round_to(self.spec.dtype, w)

    def __call__(self):
        x, w = (torch.from_numpy(a.copy()) for a in (self.x, self.w))
        if self.truncate:  # keep 10 fraction bits, truncating: TF32's worst rounding
            x, w = (t.view(torch.int32).bitwise_and(~0x1FFF).view(torch.float32) for t in (x, w))
        s = self.spec
        if self.accumulate == "float32":
            y = torch.nn.functional.conv2d(x, w, None, s.stride, s.padding, s.dilation, s.groups)
        else:  # sum in the half dtype, one input channel at a time (no wider accumulator)
            y = torch.zeros(s.output_shape, dtype=getattr(torch, self.accumulate))
            for c in range(s.in_channels):
                y += torch.nn.functional.conv2d(x[:, c:c + 1], w[:, c:c + 1]).to(y.dtype)
        self.y = reference.round_to(s.dtype, y.float().numpy())

    def result(self):
        return self.y

    def inputs(self):
        return self.x, self.w


@pytest.mark.unit
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_with_fp32_sums_passes_and_half_sums_fail(dtype):
    spec = ConvSpec(1, 1024, 8, 4, 4, 1, dtype=dtype)  # K = 1024: no exact amplitude for bf16
    assert verify.check(Emulated(spec), spec).verdict == "passed"
    wrong = verify.check(Emulated(spec, accumulate=dtype), spec)
    assert wrong.verdict == "failed", wrong  # summing 1024 terms in the dtype breaks the bound


@pytest.mark.unit
def test_tf32_passes_only_with_the_tf32_tolerance():
    spec = ConvSpec(1, 4, 8, 16, 16, 1)  # K = 4: TF32's input rounding dwarfs fp32's sums
    undeclared = verify.check(Emulated(spec, truncate_tf32=True), spec)
    assert undeclared.verdict == "failed" and "float32 rounding bound" in undeclared.detail
    check = verify.check(Emulated(spec, truncate_tf32=True, compute="tf32"), spec)
    assert check.verdict == "passed", check  # and exact inputs stayed exact in TF32


@pytest.mark.unit
def test_winograd_or_fft_kernels_lose_the_exact_claim():
    assert torch_backend.algorithm_exact(["sm90_xmma_fprop_implicit_gemm_f32f32_tf32f32"])
    assert not torch_backend.algorithm_exact(["void cudnn::winograd_nonfused::winogradForwardData"])
    assert not torch_backend.algorithm_exact(["fft2d_r2c_32x32"])
    assert not torch_backend.algorithm_exact([])  # nothing seen: no claim
    assert torch_backend.algorithm_of(["fft2d_r2c_32x32", "fft2d_c2r"]) == "fft"
    assert torch_backend.algorithm_of([]) == "unknown"


class Winograd(Emulated):
    """A conv whose rounding error is `error` times fp32's worst case on every output: what a
    transform-domain algorithm can do, declared as such."""

    def __init__(self, spec, error, algorithm="winograd"):
        super().__init__(spec)
        self.error, self.algorithm, self.exact = error, algorithm, algorithm == "direct"

    def __call__(self):
        super().__call__()
        bound = reference.gamma(self.spec.reduction_length, reference.ACCUMULATOR_U)
        x, w = (np.abs(a).astype(np.float64) for a in (self.x, self.w))
        scale = reference.conv2d(self.spec, x, w)
        self.y = self.y + self.error * bound * scale


@pytest.mark.unit
def test_an_inexact_algorithm_gets_its_own_bound_and_the_row_says_so():
    spec = ConvSpec(1, 64, 8, 6, 6, 3, padding=1)
    direct = verify.check(Emulated(spec), spec)
    assert direct.passed and direct.mode == "exact: bitwise; random: float32 bound"
    wino = verify.check(Winograd(spec, 100), spec)  # 100x fp32's bound: within Winograd's 256x
    assert wino.passed, wino
    assert wino.mode == "exact: winograd-algorithm bound; random: float32 bound x256 (winograd algorithm)"
    assert not verify.check(Winograd(spec, 1000), spec).passed  # beyond any algorithm's bound
    assert not verify.check(Winograd(spec, 100, algorithm="direct"), spec).passed  # not declared
    unknown = verify.check(Winograd(spec, 100, algorithm="unknown"), spec)
    assert unknown.passed and "unknown-algorithm bound" in unknown.mode


@pytest.mark.unit
def test_a_half_precision_check_that_cannot_be_bitwise_says_so():
    spec = ConvSpec(1, 2304, 4, 3, 3, 1, dtype="float16")  # K = 2304: no exact amplitude
    assert verify.check_mode(spec, "direct").startswith("exact: one rounding to float16")


@pytest.mark.unit
def test_tf32_rows_use_the_tf32_roof_never_the_fp32_one():
    p = peaks.Peaks(50e12, 4e12, "fma", "copy", flops_by_dtype={"tf32": 400e12})
    tf32 = roofline.row_columns(1e12, 1e9, "float32", 1e-2, p, "tf32")
    assert tf32["roofline_s"] == pytest.approx(1e12 / 400e12) and tf32["pct_of_roof"] < 100
    assert math.isnan(roofline.row_columns(1e12, 1e9, "float32", 1e-2, peaks.Peaks(
        50e12, 4e12, "fma", "copy"), "tf32")["roofline_s"])  # no TF32 roof: no bound, not fp32's
    import pandas as pd

    frame = pd.DataFrame([{"flops": 1e12, "bytes": 1e9, "dtype": "float32", "median_s": 1e-2,
                           "compute": "tf32"}, {"flops": 1e12, "bytes": 1e9, "dtype": "float32",
                                                "median_s": 1e-2, "compute": None}])
    drawn = roofline.add_columns(frame, p)["roofline_s"].tolist()
    assert drawn == pytest.approx([1e12 / 400e12, 1e12 / 50e12])


@pytest.mark.unit
def test_tf32_is_set_per_kernel_through_one_api():
    from pwbench import torch_flags

    torch_flags.set_tf32(True)
    assert torch_flags.tf32_enabled()
    torch_flags.for_cuda_kernel(False)
    assert not torch_flags.tf32_enabled() and torch.backends.cudnn.benchmark
    if hasattr(torch.backends.cudnn.conv, "fp32_precision"):  # the API torch 2.9+ wants
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    torch.backends.cudnn.benchmark = False


@pytest.mark.unit
def test_blocks_get_a_tf32_variant_where_convs_do():
    from pwbench.workloads import suites

    backend = torch_backend.Backend(cuda.CudaGPU())  # no GPU here: as a GPU with TF32 would
    backend.tf32 = True
    block = next(w for w in suites.load("blocks").layers if w.kind == "bottleneck")
    built = backend.build(block)
    assert [b.variant for b in built] == ["", "tf32"] and built[1].columns == {"compute": "tf32"}
    assert built[1].make.func is torch_backend.TorchBlock and built[1].make.keywords["tf32"]
    assert backend.build(ConvSpec(1, 8, 8, 4, 4, 1, dtype="float16")).variant == ""  # fp32 only


@pytest.mark.unit
@pytest.mark.parametrize("text, numbers", [("9.0", (9, 0)), ("10.0", (10, 0)), ("12.1", (12, 1)),
                                           (None, None)])
def test_compute_capability_is_compared_as_numbers(text, numbers):
    assert cuda.capability(text) == numbers
    assert cuda.capability("10.0") >= (8, 0) > cuda.capability("7.5")  # as text, "10.0" < "8.0"


@pytest.mark.unit
def test_a_driver_runs_any_minor_release_of_its_cuda_major():
    assert cuda.driver_runs_toolkit("13.0", "13.2.51")  # minor-version compatibility
    assert not cuda.driver_runs_toolkit("12.8", "13.0.88")
    assert cuda.driver_runs_toolkit(None, "13.0.88")  # unknown: not refused


@pytest.mark.unit
def test_the_arch_falls_back_to_torch_when_nvml_cannot_say(monkeypatch):
    monkeypatch.setattr(cuda, "gpu_facts", lambda index=0: {"gpu": "NVIDIA B200"})  # no capability
    monkeypatch.setattr(cuda, "torch_capability", lambda index=0: "10.0")
    target = cuda.CudaGPU()
    assert target.visible_arch() == "sm_100" and target.facts()["gpu_compute_capability"] == "10.0"


@pytest.mark.unit
def test_cuda_n_names_the_gpu_of_that_index():
    from pwbench import targets

    target = targets.resolve("cuda:1")
    assert target.index == 1 and target.torch_device == "cuda:1"
    assert targets.resolve("cuda").torch_device == "cuda:0"
    assert cuda.CudaGPU().kernel_timeout_s == cuda.KERNEL_TIMEOUT_S <= 120  # a GPU lent briefly


@pytest.mark.unit
def test_half_precision_rows_use_the_tensor_core_roof():
    p = peaks.Peaks(50e12, 4e12, "fma", "copy", flops_by_dtype={"float16": 900e12})
    fp32 = roofline.row_columns(1e12, 1e9, "float32", 1.0, p)
    fp16 = roofline.row_columns(1e12, 1e9, "float16", 1.0, p)
    assert fp32["roofline_s"] == pytest.approx(1e12 / 50e12)
    assert fp16["roofline_s"] == pytest.approx(1e12 / 900e12) and fp16["bound"] == "compute"
    assert math.isnan(roofline.row_columns(1e12, 1e9, "bfloat16", 1.0, p)["roofline_s"])


# ---- without a GPU ---------------------------------------------------------------------------

NO_GPU = pytest.mark.skipif(cuda.torch_sees_gpu(), reason="a GPU is visible here")


@pytest.mark.cli
@NO_GPU
@pytest.mark.parametrize("extra", [[], ["--backend", "torch,tvm"]])
def test_run_on_cuda_without_a_gpu_is_one_line_naming_pwbench_build(pwbench, extra, tmp_path):
    done = pwbench("run", "--target", "cuda", *extra, "--output", tmp_path / "r")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "no CUDA GPU is visible" in done.stderr and "pwbench build --target cuda" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.unit
@NO_GPU
def test_cuda_is_build_only_here():
    target = cuda.CudaGPU()
    assert target.run_problem() and "pwbench build" in target.run_problem()
    assert target.arch() is None and target.kernel_key() == {"arch": cuda.DEFAULT_ARCH}
    assert target.with_arch("sm_80").kernel_key() == {"arch": "sm_80"}
