"""torch's global numerics switches for CUDA kernels, set by each kernel for itself: a worker
process measures many kernels in turn, and a switch one kernel left would otherwise decide how
the next one computes (a TF32 block checked against the fp32 bound, or timed without cuDNN's
algorithm search)."""

from __future__ import annotations


def set_tf32(tf32: bool) -> None:
    """TF32 on or off for cuDNN convolutions and cuBLAS matmuls: through torch's fp32_precision
    API where it exists (torch 2.9 and later refuse to mix it with the legacy allow_tf32 flags),
    else through allow_tf32."""
    import torch

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        mode = "tf32" if tf32 else "ieee"
        torch.backends.cudnn.conv.fp32_precision = mode
        torch.backends.cuda.matmul.fp32_precision = mode
    else:
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32


def tf32_enabled() -> bool:
    """Whether cuDNN convolutions may use TF32 now (as set_tf32 left it)."""
    import torch

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return conv.fp32_precision == "tf32"
    return bool(torch.backends.cudnn.allow_tf32)


def for_cuda_kernel(tf32: bool) -> None:
    """What every torch CUDA kernel sets when it is made: its TF32 mode, and cuDNN's algorithm
    search on (`cudnn.benchmark`: the fastest algorithm per shape, found by untimed calls)."""
    import torch

    set_tf32(tf32)
    torch.backends.cudnn.benchmark = True
