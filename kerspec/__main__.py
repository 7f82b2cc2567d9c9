"""The `kerspec` command's entry point: Ctrl-C and SIGTERM are one line and exit 130 or 143
(the shell's 128 + signal number) from the first instant, while the rest is still importing.

The handlers raise `Stop`, not KeyboardInterrupt: Click turns a KeyboardInterrupt into its own
"Aborted!" and exit 1. Training installs its own handlers while it runs (stop after the batch)
and puts these back when it ends.
"""

from __future__ import annotations

import gc
import signal
import sys

# Commands that read a spec or two and print, and should feel instant. What they allocate
# (modules, classes, validators) lives until they exit, so the cycle collector's passes over it
# only cost time (a tenth of `validate`'s). Training and the other long commands keep collecting.
STATIC_COMMANDS = {"validate", "summary", "diff", "schema"}


class Stop(BaseException):
    """SIGINT or SIGTERM outside training; unwinds like KeyboardInterrupt (finally blocks run)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame):
    raise Stop(signum)


def stopped(signum: int) -> int:
    """Say so on one line; the exit code for a run stopped by `signum`."""
    sys.stderr.write("terminated\n" if signum == signal.SIGTERM else "interrupted\n")
    return 128 + signum


def main() -> None:
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if sys.argv[1:2] and sys.argv[1] in STATIC_COMMANDS:
        gc.disable()
    try:
        from kerspec.cli import app

        app(prog_name="kerspec")
    except Stop as stop:
        sys.exit(stopped(stop.signum))
    except KeyboardInterrupt:  # raised before the handlers above were in place
        sys.exit(stopped(signal.SIGINT))


if __name__ == "__main__":
    main()
