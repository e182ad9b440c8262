"""`python -m bundler` and the `bundler` command."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bundler.errors import EXIT_INTERRUPTED


def run(argv: Sequence[str] | None = None) -> int:
    # The CLI is imported here, not above, so a Ctrl-C while its modules load (a tenth of a
    # second) ends like one later on, with cli's message, instead of a traceback.
    try:
        from bundler.cli import main
    except KeyboardInterrupt:
        print("bundler: error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return main(argv)


if __name__ == "__main__":
    raise SystemExit(run())
