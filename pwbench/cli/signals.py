"""Stopping a command: Ctrl-C (SIGINT), and SIGTERM / SIGHUP handled the same way.

A CI job that is cancelled, `timeout`, systemd and `kill PID` send SIGTERM; closing the terminal
sends SIGHUP. Python's default for both is to die on the spot: the run directory would say
`running` forever and its scratch files would stay. Here they raise `Terminated`, a
KeyboardInterrupt, so every place that already stops cleanly on Ctrl-C (the run is marked
`interrupted`, every finished measurement kept, scratch removed) does so for them too; the exit
status is 128 + the signal's number, as a shell reports a process the signal killed (130 for
Ctrl-C). A signal the caller set to be ignored (`nohup`) stays ignored.
"""

from __future__ import annotations

import contextlib
import signal
import threading

HANDLED = (signal.SIGTERM, signal.SIGHUP)
EXIT_INTERRUPTED = 128 + signal.SIGINT


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the main thread is, like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def stop_like_ctrl_c():
    """Within: SIGTERM and SIGHUP raise Terminated (in the main thread; elsewhere unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in HANDLED}
    for signum, handler in before.items():
        if handler is signal.SIG_DFL:  # not SIG_IGN (nohup), not a handler someone set
            signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in before.items():
            if handler is signal.SIG_DFL:
                signal.signal(signum, handler)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 128 + N for the signal N that raised Terminated."""
    return 128 + interrupt.signum if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED


def what(interrupt: KeyboardInterrupt) -> str:
    """'interrupted' for Ctrl-C, 'stopped by SIGTERM' for Terminated."""
    return f"stopped by {interrupt}" if isinstance(interrupt, Terminated) else "interrupted"

