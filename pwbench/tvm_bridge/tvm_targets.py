"""TVM targets (apache-tvm 0.27 wants dicts): made for this CPU, a board's core or a GPU arch,
checked by TVM and LLVM, written as the canonical text recorded in every row and in a tuning
database's fingerprint, and the vector unit a CPU target builds for."""

from __future__ import annotations

import json
import platform

import tvm

from pwbench.errors import UserError
from pwbench.toolkits import parse_tvm_target

VERSION = tvm.__version__
CUDA_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152,
               "registers_per_block": 65536}  # every NVIDIA GPU since sm_70, as TVM's tags say


def host_cpu() -> str:
    """LLVM's name for this CPU (e.g. znver3); 'native' would silently build generic code."""
    return str(tvm.get_global_func("target.llvm_get_system_cpu")())


def cpu_target(given: str | None, threads: int, name: str = "cpu") -> dict:
    """An LLVM target: the user's full TVM target, else this CPU with -mcpu from LLVM (so AVX2 /
    AVX-512 follow the CPU), with num-cores (MetaSchedule needs it). A CPU LLVM does not know is
    refused: LLVM would log an error and silently build generic code under the bogus name."""
    spec = canonical(given) if given else {"kind": "llvm", "mcpu": host_cpu()}
    if spec.get("mcpu"):
        triple = str(spec.get("mtriple") or f"{platform.machine()}-linux-gnu")
        check_cpu(str(spec["mcpu"]), triple, name)
    spec.setdefault("num-cores", threads)
    return spec


def check_cpu(mcpu: str, triple: str, target_name: str) -> None:
    from tvm.target import codegen

    if not codegen.llvm_is_valid_cpu(mcpu, triple):
        hint = ("an ARM core: see `pwbench list targets`" if triple.startswith("aarch64") else
                "e.g. haswell, skylake-avx512, znver4; or --target cpu for this machine's")
        raise UserError(f"target {target_name}: LLVM does not know the CPU {mcpu!r} for "
                        f"{triple} ({hint})")


def cuda_target(given: str | None, arch: str | None) -> dict:
    """A CUDA target with an llvm host: the user's, else sm_XX of the visible GPU, with the
    per-block limits MetaSchedule needs (a device-less target has none: TVM's tags add them)."""
    spec = canonical(given) if given else {"kind": "cuda", "arch": arch or "sm_90"}
    spec.setdefault("host", {"kind": "llvm"})
    for key, value in CUDA_LIMITS.items():
        spec.setdefault(key, value)
    return spec


def canonical(text: str) -> dict:
    """What the user gave, in TVM's canonical form; the keys and features TVM derives from it
    stay out (they are not the user's choice, and they would change the recorded text)."""
    try:
        given = tvm.target.Target(parse_tvm_target(text) or text)
    except Exception as exc:  # TVM raises several types for a bad target
        raise UserError(f"TVM rejects target {text!r}: {error_line(exc)}") from None
    return {k: _plain(v) for k, v in dict(given.export()).items()
            if v not in ("", (), []) and k != "keys" and not k.startswith("feature.")}


def _plain(value):
    """A TVM export value (String, Array, Map) as plain JSON-able Python."""
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    try:
        return [_plain(v) for v in value]
    except TypeError:
        return value


def target_string(spec: dict) -> str:
    """Canonical text of a target, recorded with every result and part of a database fingerprint."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def vector_unit(target: dict, dtype_bits: int = 32) -> tuple[int, int]:
    """(lanes, accumulators): fp32 lanes of the widest vector unit, and how many vector registers
    a register tile may take (two of 16 or four of 32 are left for the broadcast input and the
    weight vector). LLVM's feature query honours mcpu and mattr (haswell, znver3: avx2; znver4/5,
    skylake-avx512: avx512f; `"mattr": ["-avx512f"]` turns it off); `llvm_get_vector_width`
    answers 512 for every x86 CPU in 0.27, so it is not asked. SVE is treated as NEON."""
    from tvm.target import codegen

    t = tvm.target.Target(target)
    triple = str(t.attrs.get("mtriple", "")) or str(tvm.get_global_func("target.llvm_get_system_triple")())
    if triple.startswith(("aarch64", "arm64")):
        return 128 // dtype_bits, 28  # NEON: 32 registers of 128 bits
    if bool(codegen.llvm_cpu_has_features(["avx512f"], t)):
        return 512 // dtype_bits, 28
    if bool(codegen.llvm_cpu_has_features(["avx"], t)):
        return 256 // dtype_bits, 14
    return 128 // dtype_bits, 14


def error_line(exc: BaseException) -> str:
    """The line of a TVM error that says what went wrong (its last), not LLVM's whole log."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
