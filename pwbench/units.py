"""Units for display. Every stored figure is in base units (seconds, FLOP/s, bytes); scaling
happens only here, when a person reads it."""

from __future__ import annotations

import math

MISSING = "–"  # a figure that does not exist (a kernel that was not timed)


def format_seconds(seconds) -> str:
    """3 significant digits, trailing zeros kept, in s, ms, µs or ns: 4.00 ms, 118 µs."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            value = seconds / scale
            decimals = max(0, 2 - math.floor(math.log10(value))) if value > 0 else 0
            return f"{value:.{decimals}f} {unit}"
