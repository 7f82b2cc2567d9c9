"""Ctrl-C and SIGTERM as one line and exit 130 or 143 (the shell's 128 + signal number).

The handlers raise `Stop`, not KeyboardInterrupt: Click turns a KeyboardInterrupt into its own
"Aborted!" and exit 1. Training installs its own handlers while it runs (stop after the batch)
and puts these back when it ends.
"""

from __future__ import annotations

import signal
import sys


class Stop(BaseException):
    """SIGINT or SIGTERM outside training; unwinds like KeyboardInterrupt (finally blocks run)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def stop(signum, frame):
    raise Stop(signum)


def stopped(signum: int) -> int:
    """Say so on one line; the exit code for a run stopped by `signum`."""
    sys.stderr.write("terminated\n" if signum == signal.SIGTERM else "interrupted\n")
    return 128 + signum
