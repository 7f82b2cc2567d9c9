"""The `kerspec` command's entry point: Ctrl-C and SIGTERM are one line and exit 130 or 143 from
the first instant, while the rest is still importing (kerspec.stopping)."""

from __future__ import annotations

import gc
import signal
import sys

from kerspec.stopping import Stop, stop, stopped

# Commands that read a spec or two and print, and should feel instant. What they allocate
# (modules, classes, validators) lives until they exit, so the cycle collector's passes over it
# only cost time (a tenth of `validate`'s). Training and the other long commands keep collecting.
STATIC_COMMANDS = {"validate", "summary", "diff", "schema"}


def main() -> None:
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if sys.argv[1:2] and sys.argv[1] in STATIC_COMMANDS:
        gc.disable()
    try:
        from kerspec.cli import app

        app(prog_name="kerspec")
    except Stop as err:
        sys.exit(stopped(err.signum))
    except KeyboardInterrupt:  # raised before the handlers above were in place
        sys.exit(stopped(signal.SIGINT))


if __name__ == "__main__":
    main()
