"""`python -m bundler` and the `bundler` command."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

from bundler.errors import EXIT_INTERRUPTED
from bundler.signals import as_interrupts

# glibc's malloc tunes itself as it goes, which makes bundler's memory depend on its history:
# - it maps every block of 128 KiB or more on its own and, when such a block is freed, raises
#   that threshold to the block's size (and the heap's trim threshold to twice it). bundler
#   streams 128 KiB to 1 MiB pieces: until a larger block has been freed, each one is mapped,
#   faulted in and unmapped again (verify of the compact stand-ins: 41k page faults and
#   450 ms of CPU, against 11k and 390 ms);
# - each thread that allocates may get an arena of its own (up to 8 per core), and each
#   arena's free pieces stay resident: a 200-image build, its downloads, resolutions and
#   frames on several threads, peaked at 53 MiB where 10 images took 46 (the benchmark's
#   goal: at most 1.15x).
# Fixed thresholds (streamed pieces up to 1 MiB from the heap, bigger blocks mapped and given
# back, the heap trimmed past 4 MiB free) and two arenas: 44-48 MiB for 200 images, 44-46 for
# 10, verify unchanged. Other allocators have no mallopt, or ignore it; without ctypes, freeing
# one 2 MiB block sets glibc's thresholds the way its own tuning would.
_MMAP_THRESHOLD = (1 << 20) + (64 << 10)
_TRIM_THRESHOLD = 4 << 20
_ARENAS = 2
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def _settle_allocator() -> None:
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        block = bytes(2 << 20)
        del block
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    mallopt(_M_ARENA_MAX, _ARENAS)


class _Output:
    """sys.stdout or sys.stderr, whose reader may go away (`bundler build --json | head -1`).

    A closed pipe is not an error of bundler's: like `cat`, it stops writing there and says
    nothing. The run goes on to its own exit code (a bundle that failed verify still exits 1)
    and later writes, and the flush at exit, go to /dev/null instead of raising EPIPE.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self._stream.fileno())
            finally:
                os.close(null)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _quiet_on_closed_pipes() -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Output(sys.stdout), _Output(sys.stderr)
    try:
        yield
    finally:
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.flush()
        sys.stdout, sys.stderr = saved


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; SIGINT, SIGTERM and SIGHUP all end it with its cleanup and exit 128+N."""
    _settle_allocator()
    with _quiet_on_closed_pipes(), as_interrupts() as received:
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
