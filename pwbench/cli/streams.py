"""Standard output that may go away: `pwbench ... | head -1`, `> /dev/full`, a closed descriptor.

A write that fails there must neither kill a run in the middle (its measurements matter more than
its table) nor end in a traceback. While a command runs, sys.stdout and sys.stderr are wrapped:
the first failed write is remembered, the descriptor is pointed at /dev/null (so nothing, not even
the interpreter's last flush, tries again) and the command goes on. At the end, `exit_status`
says what happened: a closed pipe is the reader's choice (`head`): no message, status 141 as a
shell reports SIGPIPE; a full or failing device is one line on stderr and status 2. A non-zero
status of the command itself (a failed check, a regression) is kept.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys

EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
EXIT_UNWRITABLE = 2


class _Guarded:
    """A text stream whose failed writes are remembered instead of raised."""

    def __init__(self, stream):
        self._stream, self.error = stream, None
        if stream is None:  # the descriptor was closed when Python started (`>&-`)
            self.error = OSError(errno.EBADF, os.strerror(errno.EBADF))

    def write(self, text: str) -> int:
        if self.error is None:
            try:
                return self._stream.write(text)
            except UnicodeEncodeError:  # a layer name in UTF-8 on an ASCII terminal (LANG=C)
                return self.write(text.encode(self.encoding, "replace").decode(self.encoding))
            except OSError as exc:  # BrokenPipeError, ENOSPC, EIO, EBADF
                self._failed(exc)
        return len(text)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._stream.flush()
            except OSError as exc:
                self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        self.error = exc
        try:  # the interpreter flushes the real stream at exit: give it somewhere to go
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the real stream's
        return getattr(self._stream, name)


@contextlib.contextmanager
def guarded():
    """Within: sys.stdout and sys.stderr never raise on write; yields (stdout, stderr) guards."""
    before = sys.stdout, sys.stderr
    out, err = _Guarded(sys.stdout), _Guarded(sys.stderr)
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        for guard in (out, err):
            guard.flush()
        sys.stdout, sys.stderr = before


def exit_status(status: int, out: _Guarded) -> int:
    """The command's status, or what the lost output calls for when the command succeeded (call
    it within `guarded`: stderr may be gone too)."""
    if out.error is None:
        return status
    if out.error.errno == errno.EPIPE:
        return status or EXIT_BROKEN_PIPE
    print(f"pwbench: error: cannot write to standard output ({out.error.strerror}); what it "
          "would have shown was discarded", file=sys.stderr)
    return status or EXIT_UNWRITABLE
