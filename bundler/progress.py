"""Progress on stderr: a bar per stage on a terminal, a plain line per stage where a terminal
has no room to draw one (a 0-column pty, as some CI runners give), nothing when stderr is not
a terminal or with --quiet.

A bar counts one thing and its rate is of that thing. Its total is known when its stage
starts and never grows under the user's eyes, except when more bytes come than announced (a
blob fetched again after a bad digest), and then it grows to the count, never shrinks. A stage
whose size is learnt as it goes (a compact build compresses layers a registry gives only gzip
sizes of) counts without a total until the last size is known (set_total). A bar's clock starts
with its first byte, not when it is drawn: a stage that waits for another (compression waits
for the pull) shows the rate of its own work. Units are decimal, MB as `verify` prints them.
The pull bar names the image being pulled (Feed).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import BinaryIO, TextIO

BARS, LINES, OFF = "bars", "lines", "off"
# tqdm's default, with the unit on the counts too: "12.3MB/43.9MB", as in "4.1MB/s".
_FORMAT = "{l_bar}{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}]"
# Until a bar's total is known: the count, the time and the rate.
_COUNTING = "{desc}: {n_fmt}B [{elapsed}, {rate_fmt}]"
# How long an image's name may be in a bar's description: the bar keeps most of the line.
_NAME_WIDTH = 40


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
        self.started = False
        self._tqdm = None
        self._lock = threading.Lock()

    def start(self, total: int | None, line: str | None = None) -> None:
        """Set the total (None: not known yet, see set_total), before any byte is counted;
        draw the bar or say the line."""
        with self._lock:
            self.started = True
            self.total = self.initial_total = None if total is None else max(total, self.n)
            if self._progress.mode == BARS:
                # Imported when used: a quiet build, verify and place never load it (5 ms).
                from tqdm import tqdm

                # miniters=1: check the clock at every update, so the bar is redrawn at least
                # every mininterval while bytes move (tqdm's adaptive miniters skipped seconds).
                self._tqdm = tqdm(total=self.total, initial=self.n, desc=self.description,
                                  unit="B", unit_scale=True, unit_divisor=1000, miniters=1,
                                  mininterval=0.2, file=self._progress.stream, leave=False,
                                  dynamic_ncols=True,
                                  bar_format=_COUNTING if total is None else _FORMAT)
            elif self._progress.mode == LINES:
                text = line or f"{self.description}: {_mb(self.total or 0)}"
                print(f"bundler: {text}", file=self._progress.stream, flush=True)

    def set_total(self, total: int) -> None:
        """The total of a bar started without one, once it is known; from then on it shows
        how far it is and how long is left."""
        with self._lock:
            if self.total is not None:
                return
            self.total = max(total, self.n)
            if self._tqdm is not None:
                self._tqdm.total = self.total
                self._tqdm.bar_format = _FORMAT
                self._tqdm.refresh()

    def update(self, n: int = 1) -> None:
        with self._lock:
            if self.n == 0 and n > 0 and self._tqdm is not None:
                # The stage's first byte: its clock starts now, so neither the elapsed time
                # nor the rate counts the wait for the stage before it.
                now = self._tqdm._time()
                self._tqdm.start_t = self._tqdm.last_print_t = now
            self.n += n
            if self.total is not None and self.n > self.total:
                self.total = self.n
                if self._tqdm is not None:
                    self._tqdm.total = self.total
            if self._tqdm is not None:
                self._tqdm.update(n)

    def describe(self, subject: str | None) -> None:
        """Say what the stage is working on after its name (None: nothing in particular).
        Drawn at once: an image pulled within one redraw interval would otherwise never be
        named (subjects change once per layer, so this adds a draw per layer at most)."""
        with self._lock:
            text = f"{self.description} {subject}" if subject else self.description
            if self._tqdm is not None and text != self._tqdm.desc:
                self._tqdm.set_description_str(text, refresh=True)

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
        self._reading: dict[str, int] = {}  # image -> its layers being read, in start order
        self._lock = threading.Lock()

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def refresh(self) -> None:
        self._bar.refresh()

    def reading(self, what: str, started: bool) -> None:
        """A layer of the image `what` names (mutate.layer_what) started (or stopped) being
        read: the bar names the image read longest, and how many others are."""
        image = _image_of(what)
        with self._lock:
            count = self._reading.get(image, 0) + (1 if started else -1)
            if count > 0:
                self._reading[image] = count
            else:
                self._reading.pop(image, None)
            images = list(self._reading)
        others = f" (+{len(images) - 1})" if len(images) > 1 else ""
        self._bar.describe(f"{images[0]}{others}" if images else None)


class CountingReader:
    """Reports each chunk read from `raw` to a bar; with `what` (a layer's name, as
    mutate.layer_what gives it), also when the reading starts and ends (Feed.reading)."""

    def __init__(self, raw: BinaryIO, bar, what: str | None = None):
        self._raw = raw
        self._bar = bar
        self._what = what if hasattr(bar, "reading") else None
        self._state = "new"

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if self._what is not None:
            if self._state == "new":
                self._state = "reading"
                self._bar.reading(self._what, True)
            if not data and n != 0:
                self._ended()
        self._bar.update(len(data))
        return data

    def close(self) -> None:
        self._ended()
        getattr(self._raw, "close", lambda: None)()

    def _ended(self) -> None:
        if self._state == "reading":
            self._bar.reading(self._what, False)
        self._state = "ended"


def _image_of(what: str) -> str:
    """The image a layer's name is of, short: `docker.io/rancher/x:v1: layer 2 (sha256:...)`
    is `x:v1`; a digest pin is left out, and a name too long is cut in the middle."""
    reference = what.split(": ", 1)[0].split("@", 1)[0]
    name = reference.rsplit("/", 1)[-1]
    if len(name) > _NAME_WIDTH:
        half = (_NAME_WIDTH - 3) // 2
        name = f"{name[:half]}...{name[-half:]}"
    return name


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
