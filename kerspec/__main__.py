"""The `kerspec` command's entry point: Ctrl-C and SIGTERM are one line and exit 130 or 143 from
the first instant, while the rest is still importing (kerspec.stopping)."""

from __future__ import annotations

import signal
import sys

from kerspec.stopping import Stop, stop, stopped


def main() -> None:
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        from kerspec.cli import app

        app(prog_name="kerspec")
    except Stop as err:
        sys.exit(stopped(err.signum))
    except KeyboardInterrupt:  # raised before the handlers above were in place
        sys.exit(stopped(signal.SIGINT))


if __name__ == "__main__":
    main()
