"""Float64 NumPy references, independent of every backend: the convolution itself, the inputs the
checks feed it, and the rounding bounds a correct kernel stays within, per dtype.

1. Exact-by-construction inputs (benchdnn's idea): small integers in [-a, a], a third of them
   zero. Every product and partial sum is an integer of magnitude at most a*a*K (K = reduction
   length), so when a*a*K <= 2**p (p = significand bits of the dtype: 24 for fp32, 11 for fp16,
   8 for bf16) every sum is exact in the dtype and in any wider accumulator, in any order: a
   direct convolution must match the reference bit for bit. a is the largest of 3, 2, 1 that
   fits: fp32 always takes 3; fp16 takes 3 up to K = 227, 2 up to 512, 1 up to 2048; bf16 takes
   3 up to K = 28, 2 up to 64, 1 up to 256. Beyond that (e.g. a 3x3x256 fp16 conv, K = 2304) no
   amplitude is exact in the dtype: with a = 1 the sums stay exact in the fp32 accumulator every
   backend uses, and the output may be off by its one rounding to the dtype, u_d * |ref|, and no
   more. TF32 keeps 10 fraction bits, so integers up to 3 and their products are exact in it too.
   A kernel with inexact transforms (Winograd, FFT) gets its algorithm's growth (3.) times
   gamma_K * a*a*K, plus that rounding.
2. Seeded random inputs in [-1, 1), rounded to the dtype first, so that the reference is the
   exact result for the values the kernel holds. Each output lies within
       tol = (rho + gamma_K) * M + u_d * (|ref| + (rho + gamma_K) * M),   M = |x| conv |w|,
   gamma_K = K*u / (1 - K*u) with u = 2**-24: the worst case of summing K products in fp32 in
   any order (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.5), for the
   fp32 accumulation of every backend (cuDNN sums fp16 and bf16 convs in fp32; pwbench's TVM
   compute does too); rho = 2 * 2**-10 + 2**-20 for a TF32 kernel (`compute = "tf32"`: each
   input truncated to 10 fraction bits, at worst), else 0; u_d the output's rounding to a half
   dtype (2**-11 fp16, 2**-8 bf16; 0 for fp32, whose last rounding is the accumulator's).
3. Algorithms that transform their operands (cuDNN's Winograd and FFT kernels) round in the
   transformed domain, whose values can be far larger than the direct products: their sums'
   term (rho + gamma_K) is multiplied by the algorithm's growth. Winograd F(4x4, 3x3), the tile
   of cuDNN's non-fused Winograd (the fused F(2x2, 3x3) grows less): the transforms' absolute
   row sums, |A^T| (|G| 1 * |B^T| 1), reach 48 on an output where a direct sum of three taps
   has 3, a factor 16 per dimension, 256 in 2-D. An FFT's error is normwise (about u log2(n)
   ||x|| ||w||), with no elementwise bound of this form: it gets the same allowance, a practical
   bound rather than a proven one. A kernel whose algorithm could not be seen ("unknown") gets it
   too; the row's `check_mode` says which bound was applied.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

SIGNIFICAND_BITS = {"float32": 24, "float64": 53, "float16": 11, "bfloat16": 8}
UNIT_ROUNDOFF = {d: 2.0 ** -bits for d, bits in SIGNIFICAND_BITS.items()}
ACCUMULATOR_U = UNIT_ROUNDOFF["float32"]  # every backend sums in fp32 or better
TF32_RHO = 2 * 2.0**-10 + 2.0**-20  # a product of two inputs truncated to TF32
ALGORITHM_GROWTH = {"direct": 1.0, "winograd": 256.0, "fft": 256.0, "unknown": 256.0}  # 3. above


def exact_amplitude(dtype: str, k: int) -> int | None:
    """The largest a in 3, 2, 1 with a*a*K <= 2**p (every sum exact in the dtype), else None."""
    limit = 2 ** SIGNIFICAND_BITS[dtype]
    return next((a for a in (3, 2, 1) if a * a * k <= limit), None)


def exact_values(rng: np.random.Generator, shape, amplitude: int = 3) -> np.ndarray:
    values = np.arange(-amplitude, amplitude + 1, dtype=np.float32)
    return rng.choice(values, size=shape, p=np.where(values == 0, 0.34, 0.66 / (2 * amplitude)))


def random_values(rng: np.random.Generator, shape, scale: float = 1.0,
                  dtype: str = "float32") -> np.ndarray:
    """Uniform in [-scale, scale), rounded to `dtype` (held as float32)."""
    return round_to(dtype, (scale * rng.uniform(-1, 1, shape)).astype(np.float32))


def round_to(dtype: str, a: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest value of `dtype` (ties to even), as float32."""
    if dtype == "float16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":  # keep the top 16 bits of the fp32 pattern, rounded to nearest even
        bits = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.astype(np.uint32).view(np.float32)
    return a


def output_roundoff(dtype: str) -> float:
    """The one rounding of an fp32-accumulated output to a half dtype (0 for fp32 and fp64)."""
    return 0.0 if dtype in ("float32", "float64") else UNIT_ROUNDOFF[dtype]


def gamma(k: int, u: float) -> float:
    return k * u / (1 - k * u)


def growth(algorithm: str) -> float:
    return ALGORITHM_GROWTH.get(algorithm, ALGORITHM_GROWTH["unknown"])


def conv_tolerance(spec, magnitude: np.ndarray, ref: np.ndarray, compute: str = "",
                   algorithm: str = "direct") -> np.ndarray:
    """Per-output bound of the random check (2. and 3. in the module docstring)."""
    sums = (TF32_RHO if compute == "tf32" else 0.0) + gamma(spec.reduction_length, ACCUMULATOR_U)
    sums *= growth(algorithm)
    out = output_roundoff(spec.dtype)
    return sums * magnitude + out * (np.abs(ref) + sums * magnitude)


def exact_tolerance(spec, expected: np.ndarray, exact: bool, algorithm: str = "unknown"):
    """Per-output bound of the exact check (1. in the module docstring): 0 (bit equality) for a
    direct kernel whose sums are exact in the dtype; else one rounding to the dtype, plus, for an
    inexact algorithm, its growth times the fp32 bound of sums up to a*a*K."""
    k, a = spec.reduction_length, exact_amplitude(spec.dtype, spec.reduction_length)
    if exact and a is not None:
        return 0.0
    out = output_roundoff(spec.dtype)
    a = a or 1
    sums = 0.0 if exact else growth(algorithm) * gamma(k, ACCUMULATOR_U) * a * a * k * (1 + out)
    return out * np.abs(expected) + sums


def conv2d(spec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Direct float64 convolution of a ConvSpec's shape, NCHW in and out."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel_size, spec.stride, spec.padding, spec.dilation
    n, c, _, _ = spec.input_shape
    g = spec.groups
    oh, ow = spec.out_hw
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    wg = np.asarray(w, np.float64).reshape(g, spec.out_channels // g, c // g, kh, kw)
    out = np.empty(spec.output_shape)
    for i in range(n):  # one image at a time bounds the memory of the strided view's copies
        xi = np.ascontiguousarray(x[i]).reshape(g, c // g, *x.shape[2:])
        s = xi.strides
        patches = as_strided(xi, (g, c // g, oh, ow, kh, kw),
                             (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw))
        out[i] = np.einsum("gcyxij,gocij->goyx", patches, wg, optimize=True).reshape(
            spec.out_channels, oh, ow)
    return out


def conv_bytes(spec) -> int:
    """Memory conv2d needs at once: float64 input and weight, the output, einsum's copy of the
    patches of one image."""
    n, c, h, w = spec.input_shape
    oh, ow = spec.out_hw
    patches = c * oh * ow * spec.kernel_size[0] * spec.kernel_size[1]
    return 8 * (n * c * h * w + spec.params + int(np.prod(spec.output_shape)) + patches)
