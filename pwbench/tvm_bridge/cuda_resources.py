"""What a compiled CUDA kernel uses on an NVIDIA SM, and how many of its blocks fit on one.

Resources come from `ptxas -v` (nvcc prints them while it compiles; nothing to install):
registers per thread, static shared memory per block, barriers, stack frame, spill stores and
loads, local memory. Theoretical occupancy follows cudaOccMaxActiveBlocksPerMultiprocessor of
CUDA 13.0's include/cuda_occupancy.h: the least of the warp, block, register (allocated per warp
in units of 256, per sub-partition), shared-memory (128 B units plus 1 KB reserved per block from
cc 8.0, default carveout = the largest) and barrier limits, partitioned global caching off.

Per-arch limits: CUDA C++ Programming Guide, "Technical Specifications per Compute Capability",
and the A100 / H100 tuning guides for shared memory. Only the archs below are known; another arch
gets its resources but no occupancy (NaN), never a guess.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

_SM80 = dict(max_threads_per_block=1024, max_threads_per_sm=2048, max_blocks_per_sm=32,
             regs_per_sm=65536, regs_per_block=65536, max_regs_per_thread=255,
             smem_per_sm=164 << 10, smem_per_block_default=48 << 10, smem_per_block_optin=163 << 10,
             barrier_slots_per_block=2)
ARCH_LIMITS = {
    "sm_80": _SM80,  # A100
    "sm_86": _SM80 | dict(max_threads_per_sm=1536, max_blocks_per_sm=16, smem_per_sm=100 << 10,
                          smem_per_block_optin=99 << 10, barrier_slots_per_block=1),  # RTX 30, A40
    "sm_89": _SM80 | dict(max_threads_per_sm=1536, max_blocks_per_sm=24, smem_per_sm=100 << 10,
                          smem_per_block_optin=99 << 10, barrier_slots_per_block=1),  # L4, L40
    "sm_90": _SM80 | dict(smem_per_sm=228 << 10, smem_per_block_optin=227 << 10),  # H100, H200
}
WARP, REG_UNIT, SUB_PARTITIONS, SMEM_UNIT, SMEM_RESERVED = 32, 256, 4, 128, 1024


@dataclass(frozen=True)
class Resources:
    """One device function, as ptxas reports it for one arch (bytes, registers per thread)."""
    kernel: str
    arch: str
    registers: int
    shared_bytes: int  # static __shared__ per block
    barriers: int
    stack_bytes: int  # stack frame per thread
    spill_store_bytes: int
    spill_load_bytes: int
    local_bytes: int  # lmem per thread, when ptxas prints it

    def to_dict(self) -> dict:
        return asdict(self)


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_FIELDS = {"barriers": re.compile(r"used (\d+) barriers"), "smem": re.compile(r"(\d+) bytes smem"),
           "lmem": re.compile(r"(\d+) bytes lmem")}


def parse_ptxas(log: str) -> list[Resources]:
    """Every entry function in a `ptxas -v` log (nvcc --ptxas-options=-v), in order:
        ptxas info : Compiling entry function 'main_kernel' for 'sm_90'
        ptxas info : Function properties for main_kernel
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info : Used 40 registers, used 1 barriers, 9216 bytes smem"""
    found, current = [], None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            current = {"kernel": m.group(1), "arch": m.group(2), "frame": (0, 0, 0)}
        elif current is not None and (m := _FRAME.search(line)):
            current["frame"] = tuple(map(int, m.groups()))
        elif current is not None and (m := _USED.search(line)):
            value = {k: int(r.search(line).group(1)) if r.search(line) else 0
                     for k, r in _FIELDS.items()}
            stack, stores, loads = current["frame"]
            found.append(Resources(current["kernel"], current["arch"], int(m.group(1)),
                                   value["smem"], value["barriers"], stack, stores, loads,
                                   value["lmem"]))
            current = None
    return found


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def occupancy(arch: str, threads_per_block: int, registers: int, shared_bytes: int,
              dynamic_shared_bytes: int = 0, barriers: int = 1) -> dict:
    """Blocks of one kernel resident per SM, the occupancy (active warps / the SM's maximum) and
    what limits it; occupancy NaN for an arch whose limits are not known here."""
    limits = ARCH_LIMITS.get(arch)
    if limits is None or threads_per_block <= 0:
        return {"blocks_per_sm": math.nan, "occupancy": math.nan, "limited_by": "unknown arch"
                if limits is None else "unknown block size"}
    warps = -(-threads_per_block // WARP)
    max_warps = limits["max_threads_per_sm"] // WARP
    by = {"warps": max_warps // warps if threads_per_block <= limits["max_threads_per_block"] else 0,
          "blocks": limits["max_blocks_per_sm"]}
    regs_per_warp = _round_up(max(registers, 1) * WARP, REG_UNIT)
    if (registers > limits["max_regs_per_thread"]
            or regs_per_warp * _round_up(warps, SUB_PARTITIONS) > limits["regs_per_block"]):
        by["registers"] = 0
    else:
        per_sub = limits["regs_per_sm"] // SUB_PARTITIONS // regs_per_warp
        by["registers"] = per_sub * SUB_PARTITIONS // warps
    asked = shared_bytes + dynamic_shared_bytes
    per_block = _round_up(asked + SMEM_RESERVED, SMEM_UNIT)
    cap = limits["smem_per_block_optin" if asked > limits["smem_per_block_default"]
                 else "smem_per_block_default"] + SMEM_RESERVED
    by["shared memory"] = 0 if per_block > cap else limits["smem_per_sm"] // per_block
    if barriers:
        by["barriers"] = limits["max_blocks_per_sm"] * limits["barrier_slots_per_block"] // barriers
    blocks = min(by.values())
    return {"blocks_per_sm": blocks, "occupancy": blocks * warps / max_warps,
            "limited_by": ", ".join(k for k, v in by.items() if v == blocks)}
