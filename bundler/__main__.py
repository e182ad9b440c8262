"""`python -m bundler` and the `bundler` command."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bundler.errors import EXIT_INTERRUPTED
from bundler.signals import as_interrupts

# glibc's malloc maps every block of 128 KiB or more on its own and, when such a block is
# freed, raises that threshold to the block's size (and the heap's trim threshold to twice
# it). bundler streams 128 KiB to 1 MiB pieces: until a larger block has been freed, each one
# is mapped, faulted in and unmapped again (verify of the compact stand-ins: 41k page faults
# and 450 ms of CPU, against 11k and 390 ms). Start-up used to free such a block by accident,
# in modules each command no longer imports; this frees one on purpose, so every command
# starts the same. The block is calloc'd and never touched; other allocators ignore it.
_ALLOCATOR_BLOCK = 2 << 20


def _settle_allocator() -> None:
    block = bytes(_ALLOCATOR_BLOCK)
    del block


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; SIGINT, SIGTERM and SIGHUP all end it with its cleanup and exit 128+N."""
    _settle_allocator()
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
