"""Value types of command-line options that several commands and backends share: one line of
argparse error for a bad value, never a traceback."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def names(text: str) -> tuple[str, ...]:
    """A comma-separated list, e.g. 'structured,default'."""
    return tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


def given_path(text: str) -> Path:
    """A file or directory named on the command line; '' would be the current folder (an
    --output '' wrote a run into it), never what was meant."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty name")
    return Path(text)
