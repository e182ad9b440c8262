"""Progress bars on stderr: tqdm on a terminal, nothing otherwise or with --quiet."""

from __future__ import annotations

import sys
from typing import BinaryIO


class Progress:
    """Makes byte-counting bars, or silent stand-ins when bars are off."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def bar(self, description: str, total: int):  # -> tqdm.tqdm or _Silent
        if not self.enabled:
            return _Silent(total)  # tqdm's import costs a quiet build 5 ms and nothing else
        from tqdm import tqdm  # imported when used: verify and place never draw bars

        return tqdm(
            total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
            file=sys.stderr, leave=False,
        )


class _Silent:
    """The part of tqdm's interface bundler uses, doing nothing."""

    def __init__(self, total: int):
        self.total = total

    def update(self, n: int = 1) -> None:
        pass

    def refresh(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


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
