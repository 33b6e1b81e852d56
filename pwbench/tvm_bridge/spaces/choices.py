"""What the structured spaces choose from, for a vector unit of `lanes` fp32 lanes and
`accumulators` vector registers for the output tile: the channel blocks and the register-tile
widths. Plain Python (no TVM), so every vector width is tested on any machine.

Every layer gets a choice: nothing here can come out empty.
- Output channels (the vectorised block, `oc_bn`): one or two vectors where they divide the
  channels; else a multiple of 8 that divides them (24 on AVX-512); else the channels themselves
  when they fit in 4 vectors (12, 20: partial vectors, no waste); else a divisor of at least half
  a vector; else one vector with the channels padded up to a multiple of it (97 channels: 112 at
  16 lanes), the padded outputs computed and dropped.
- Input channels (`ic_bn`, the reduction's inner chunk, never vectorised): one or two vectors, 8
  or 32 where they divide; else all of them up to 64 (3 for an RGB stem); else their largest
  divisor up to 64 (1 at worst: a reduction of single channels is still exact and fast enough).
- The register tile (`reg_n` output columns x `oc_bn` channels) takes at most `accumulators`
  vector registers, so its width is at most accumulators / vectors per column. It need not divide
  the output width: the last tile of a row is a tail (TVM's split with a predicate), so an output
  width of 17 or 149 is tiled like 16 or 148. Offered: the exact divisors of the width and the
  balanced widths ceil(ow / k) for the fewest chunks k that fit, at most MAX_TILES of them.
"""

from __future__ import annotations

import math

MAX_TILES = 6  # register-tile widths offered per task
MAX_COLUMNS = 32  # never unroll more output columns than this


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def out_blocks(channels: int, lanes: int) -> list[int]:
    """Blocks of the vectorised (output) channel, the best first, at most two. A block that does
    not divide the channels means they are padded up to a multiple of it (`padded`)."""
    ok = [m * lanes for m in (1, 2) if channels % (m * lanes) == 0]
    if not ok:
        ok = [d for d in divisors(channels) if d % 8 == 0 and d <= 4 * lanes][::-1]
    if not ok and channels <= 4 * lanes:
        ok = [channels]
    if not ok:
        best = max(d for d in divisors(channels) if d <= 4 * lanes)
        ok = [best] if best >= lanes // 2 else [lanes]
    return ok[:2]


def in_blocks(channels: int, lanes: int) -> list[int]:
    """Input-channel blocks (the reduction's inner chunk), dividing the channels, at most two."""
    ok = [b for b in dict.fromkeys((lanes, 2 * lanes, 8, 32)) if channels % b == 0]
    if not ok:
        ok = [channels] if channels <= 64 else [max(d for d in divisors(channels) if d <= 64)]
    return ok[:2]


def padded(channels: int, block: int) -> int:
    """The channel count rounded up to a multiple of the block."""
    return math.ceil(channels / block) * block


def vectors(block: int, lanes: int) -> int:
    return math.ceil(block / lanes)


def tiles(width: int, vectors_per_column: int, accumulators: int, lo: int) -> list[int]:
    """Register-tile widths for an output row of `width` columns, widest first (see the module
    docstring); tiles narrower than `lo` only when nothing wider fits."""
    most = max(1, min(width, MAX_COLUMNS, accumulators // vectors_per_column))
    fewest = math.ceil(width / most)
    balanced = [math.ceil(width / k) for k in range(fewest, fewest + 4)]
    exact = [d for d in divisors(width) if d <= most]
    wide = sorted({t for t in balanced + exact if t >= min(lo, most)}, reverse=True)
    return wide[:MAX_TILES]
