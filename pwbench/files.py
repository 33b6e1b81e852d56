"""Small file helpers every store of pwbench shares: atomic writes, and reading a file a user
named (a suite, a peaks or machines file, a run's records) so that anything but a regular UTF-8
file of sane size is one line saying so, never a hang (a FIFO), a traceback (bytes that are not
UTF-8, TOML nested 200,000 deep) or a wrong reason (a symlink loop is not a missing file)."""

from __future__ import annotations

import errno
import json
import os
import stat
import tomllib
from pathlib import Path

from pwbench.errors import UserError

MAX_BYTES = 1 << 30  # a user's text file larger than this is not one pwbench wrote or reads


def write_json(path: Path, data, indent: int = 2) -> None:
    """Write JSON atomically: a reader (or a crash) never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent, default=str))
    tmp.replace(path)


def read_bytes(path, what: str) -> bytes:
    """The bytes of a regular file; UserError (naming `what`, e.g. 'suite file') otherwise."""
    path = Path(path)
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer that never comes
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except OSError as exc:
        why = "is a symlink loop" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
        raise UserError(f"{what} {path} {why}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UserError(f"{what} {path} is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{what} {path} is not a regular file (a FIFO, socket or device)")
        if info.st_size > MAX_BYTES:
            raise UserError(f"{what} {path} is {info.st_size / 2**30:.1f} GiB: not a {what}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def read_text(path, what: str) -> str:
    """A regular UTF-8 text file's contents (see read_bytes)."""
    data = read_bytes(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{what} {path}: not UTF-8 text (byte {data[exc.start]:#04x} on line "
                        f"{line})") from None


def parse_toml(text: str, where) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{where}: malformed TOML: {exc}") from None
    except RecursionError:
        raise UserError(f"{where}: malformed TOML: nested too deeply") from None


def parse_json(text: str, where):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UserError(f"{where}: not valid JSON: {exc}") from None
    except RecursionError:
        raise UserError(f"{where}: not valid JSON: nested too deeply") from None
