"""Progress bars on stderr: tqdm on a terminal, nothing otherwise or with --quiet."""

from __future__ import annotations

import sys
from typing import BinaryIO


class Progress:
    """Makes byte-counting bars, or silent stand-ins when bars are off."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def bar(self, description: str, total: int):  # -> tqdm.tqdm
        from tqdm import tqdm  # imported when used: verify and place never draw bars

        return tqdm(
            total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
            disable=not self.enabled, file=sys.stderr, leave=False,
        )


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
