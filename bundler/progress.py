"""Progress on stderr: a bar per stage on a terminal, a plain line per stage where a terminal
has no room to draw one (a 0-column pty, as some CI runners give), nothing when stderr is not
a terminal or with --quiet.

Every bar's total is known when its stage starts: it never grows under the user's
eyes, except when more bytes come than announced (a blob fetched again after a bad digest),
and then it grows to the count, never shrinks. Units are decimal, MB as `verify` prints them.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import BinaryIO, TextIO

BARS, LINES, OFF = "bars", "lines", "off"
# tqdm's default, with the unit on the counts too: "12.3MB/43.9MB", as in "4.1MB/s".
_FORMAT = "{l_bar}{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}]"


class Progress:
    """Makes byte-counting bars: drawn, as one line each, or silent, as the terminal allows."""

    def __init__(self, enabled: bool | None = None, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        if enabled is False or (enabled is None and not _isatty(self.stream)):
            self.mode = OFF
        else:
            self.mode = LINES if _columns(self.stream) == 0 else BARS

    def bar(self, description: str, total: int | None = None, line: str | None = None) -> Bar:
        """A bar for one stage; with `total` it starts at once, else at start()."""
        bar = Bar(self, description)
        if total is not None:
            bar.start(total, line)
        return bar

    def say(self, line: str) -> None:
        """A stage line, shown only where bars cannot be drawn (a bar says it otherwise)."""
        if self.mode == LINES:
            print(f"bundler: {line}", file=self.stream, flush=True)


class Bar:
    """Bytes of one stage against a total set when it starts; thread-safe."""

    def __init__(self, progress: Progress, description: str):
        self._progress = progress
        self.description = description
        self.n = 0
        self.total: int | None = None
        self.initial_total: int | None = None  # what start() said, for tests and reports
        self._tqdm = None
        self._lock = threading.Lock()

    def start(self, total: int, line: str | None = None) -> None:
        """Set the total, before any byte is counted; draw the bar or say the line."""
        with self._lock:
            self.total = self.initial_total = max(total, self.n)
            if self._progress.mode == BARS:
                # Imported when used: a quiet build, verify and place never load it (5 ms).
                from tqdm import tqdm

                # miniters=1: check the clock at every update, so the bar is redrawn at least
                # every mininterval while bytes move (tqdm's adaptive miniters skipped seconds).
                self._tqdm = tqdm(total=self.total, initial=self.n, desc=self.description,
                                  unit="B", unit_scale=True, unit_divisor=1000, miniters=1,
                                  mininterval=0.2, file=self._progress.stream, leave=False,
                                  dynamic_ncols=True, bar_format=_FORMAT)
            elif self._progress.mode == LINES:
                text = line or f"{self.description}: {_mb(self.total)}"
                print(f"bundler: {text}", file=self._progress.stream, flush=True)

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.n += n
            if self.total is not None and self.n > self.total:
                self.total = self.n
                if self._tqdm is not None:
                    self._tqdm.total = self.total
            if self._tqdm is not None:
                self._tqdm.update(n)

    def refresh(self) -> None:
        with self._lock:
            if self._tqdm is not None:
                self._tqdm.refresh()

    def feed(self) -> Feed:
        """What a worker that announces sizes (stage.Fetcher) gets instead of the bar."""
        return Feed(self)

    def close(self) -> None:
        with self._lock:
            if self._tqdm is not None:
                self._tqdm.refresh()  # the last state, even within mininterval of the last draw
                self._tqdm.close()
                self._tqdm = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Feed:
    """Counts bytes into a bar whose total was set up front from the manifests.

    stage.Fetcher announces each layer's size as it starts staging it (`total += size`):
    that sum is kept here, apart from the bar, so the bar's total does not grow as downloads
    begin one after another.
    """

    def __init__(self, bar: Bar):
        self._bar = bar
        self.total = 0  # what was announced

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def refresh(self) -> None:
        self._bar.refresh()


class CountingReader:
    """Reports each chunk read from `raw` to a bar."""

    def __init__(self, raw: BinaryIO, bar):
        self._raw = raw
        self._bar = bar

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._bar.update(len(data))
        return data

    def close(self) -> None:
        getattr(self._raw, "close", lambda: None)()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _columns(stream: TextIO) -> int | None:
    """The terminal's width, 0 on a pty nobody sized; None when it cannot be asked."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return None
