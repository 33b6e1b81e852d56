"""A run's scratch directory: reference outputs, exported libraries, callgrind's files.

It lives under the pwbench cache (`<cache>/scratch/<16 hex digits>`), not in the run directory:
- Worker processes then hold the same paths whatever `--output` is. Under the instruction clock a
  torch op's count follows glibc's heap, which follows the length of every string the worker
  allocated before it, paths included: two invocations whose run directories' names differed in
  length counted 1 % apart (measure/instructions.py).
- A run killed outright (SIGKILL, a power cut) cannot remove its own scratch, which can be
  hundreds of MB. Each directory records its owner (host, process id, the process's start time);
  every new run removes the directories whose owner is gone.
Where the cache cannot be written, the system's temporary directory takes its place
(env.writable_dir).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
from pathlib import Path

from pwbench import env
from pwbench.errors import UserError

OWNER = "owner.json"


def new() -> Path:
    """Where a new scratch directory goes (`claim` makes it); stale ones are removed first."""
    root = env.writable_dir("scratch")
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"no writable scratch directory (the cache {env.cache_dir()} and the "
                        "temporary directory are read-only): set PWBENCH_CACHE_DIR or TMPDIR to "
                        "a writable directory")
    sweep(root)
    return root / secrets.token_hex(8)


def claim(path: Path) -> None:
    """Make the directory `new` chose, recording this process as its owner."""
    path.mkdir(parents=True, exist_ok=True)
    (path / OWNER).write_text(json.dumps(_me()))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def sweep(root: Path) -> list[Path]:
    """Remove the scratch directories under root whose owner process is gone; returns them."""
    gone = []
    for path in root.iterdir() if root.is_dir() else ():
        try:
            owner = json.loads((path / OWNER).read_text())
        except (OSError, ValueError):
            continue  # not a scratch directory, or one being made
        if isinstance(owner, dict) and not _alive(owner):
            remove(path)
            gone.append(path)
    return gone


def _me() -> dict:
    return {"host": platform.node(), "pid": os.getpid(), "started": _start_time(os.getpid())}


def _alive(owner: dict) -> bool:
    """Whether the owner may still run: another host's (a shared cache) always may."""
    pid = owner.get("pid")
    if owner.get("host") != platform.node() or not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    started = _start_time(pid)  # a pid reused by a later process is not the owner
    return started is None or owner.get("started") in (None, started)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None
