"""Float64 NumPy references, independent of every backend: the convolution itself, the inputs the
checks feed it, and the rounding bounds a correct fp32 kernel stays within.

Exact-by-construction inputs (oneDNN benchdnn's idea): small integers, a third of them zero, so
every fp32 sum of their products is exact in any order, and a direct fp32 convolution must match
the reference bit for bit. Random inputs are uniform in [-1, 1); there a correct kernel is within
gamma_K * (|x| conv |w|) of the reference, gamma_K = K*u / (1 - K*u), u the unit roundoff, K the
reduction length: the error bound of any summation order (Higham, Accuracy and Stability of
Numerical Algorithms, 2nd ed., eq. 3.5).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53, "float16": 2.0**-11, "bfloat16": 2.0**-8}
EXACT_VALUES = np.array([-3, -2, -1, 0, 1, 2, 3], dtype=np.float32)
EXACT_PROBABILITIES = [0.11, 0.11, 0.11, 0.34, 0.11, 0.11, 0.11]


def exact_values(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.choice(EXACT_VALUES, size=shape, p=EXACT_PROBABILITIES)


def random_values(rng: np.random.Generator, shape, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.uniform(-1, 1, shape)).astype(np.float32)


def gamma(k: int, u: float) -> float:
    return k * u / (1 - k * u)


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
