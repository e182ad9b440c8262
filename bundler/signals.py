"""SIGTERM and SIGHUP end a run the way Ctrl-C does.

CI cancels, `timeout` and systemd send SIGTERM; a closed terminal sends SIGHUP. Python's default
for both is to die on the spot, leaving temporaries and scratch directories behind. Here each
of them raises Interrupted (a KeyboardInterrupt) in the main thread, so the same cleanup runs as
for Ctrl-C, and the exit code says which signal it was: 128 + N, as a shell reports it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A second signal soon after the first (a double Ctrl-C; systemd's SIGTERM then SIGHUP) must
# not break off the cleanup the first one started; one later than this still stops a
# cleanup that hangs.
GRACE = 1.0


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread for a handled signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_held = threading.local()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block a handled signal does not break into: it is raised when the block ends.

    For steps that must happen all together or not at all and take microseconds, such as
    renaming a build's outputs to their final names.
    """
    if not hasattr(_held, "signums"):
        _held.signums = None
    outer = _held.signums is not None
    if not outer:
        _held.signums = []
    try:
        yield
    finally:
        if not outer:
            signums, _held.signums = _held.signums, None
            if signums:
                raise Interrupted(signums[0])


class Received:
    """The first signal handled, if any."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._raised_at = 0.0

    def exit_code(self) -> int | None:
        return 128 + self.signum if self.signum else None

    def _handle(self, signum: int, frame: object) -> None:
        if getattr(_held, "signums", None) is not None:
            _held.signums.append(signum)
            if self.signum is None:
                self.signum = signum
            return
        now = time.monotonic()
        if self.signum is None:
            self.signum = signum
        elif now - self._raised_at < GRACE:
            return
        self._raised_at = now
        raise Interrupted(signum)


@contextlib.contextmanager
def as_interrupts(signums: tuple[int, ...] = HANDLED) -> Iterator[Received]:
    """Within the block, each of `signums` raises Interrupted; the previous handlers are put
    back after it.

    A signal whose disposition we inherited as ignored stays ignored: `nohup` ignores SIGHUP
    and a shell ignores SIGINT for background jobs, and they mean it. Outside the main thread
    no handler can be installed, and nothing changes.
    """
    received = Received()
    previous = {}
    try:
        for signum in signums:
            if signal.getsignal(signum) == signal.SIG_IGN:
                continue
            previous[signum] = signal.signal(signum, received._handle)
    except ValueError:  # not the main thread
        pass
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
