"""`python -m bundler` and the `bundler` command."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bundler.errors import EXIT_INTERRUPTED
from bundler.signals import as_interrupts


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; SIGINT, SIGTERM and SIGHUP all end it with its cleanup and exit 128+N."""
    with as_interrupts() as received:
        try:
            # Imported here, not above, so a signal while its modules load (a tenth of a
            # second) ends like one later on, instead of with a traceback.
            from bundler.cli import main

            code = main(argv)
        except KeyboardInterrupt:  # cli.main reports its own; this is before or after it
            print("bundler: error: interrupted", file=sys.stderr)
            code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED and received.exit_code():
        return received.exit_code()
    return code


if __name__ == "__main__":
    raise SystemExit(run())
