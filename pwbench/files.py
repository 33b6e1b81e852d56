"""Small file helpers every store of pwbench shares."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: Path, data, indent: int = 2) -> None:
    """Write JSON atomically: a reader (or a crash) never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent, default=str))
    tmp.replace(path)
