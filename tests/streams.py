"""Streams for tests of readers: what each read asked for and was given, and a reader read to
its end and closed."""

from __future__ import annotations

import io
from typing import BinaryIO


class Recording(io.BytesIO):
    """A stream that remembers what each read asked for, to check the reader's bounds."""

    def __init__(self, data: bytes, piece: int = -1):
        super().__init__(data)
        self.asked: list[int | None] = []
        self.given: list[int] = []
        self._piece = piece  # the most one read returns, as a socket gives what has arrived

    def read(self, n=-1):
        self.asked.append(n)
        if self._piece > 0 and (n is None or n < 0 or n > self._piece):
            n = self._piece
        data = super().read(n)
        self.given.append(len(data))
        return data


def read_closed(reader: BinaryIO, piece: int = 1 << 16) -> bytes:
    """All of `reader`, read `piece` bytes at a time (as bundler reads a blob), then closed
    even when a read raises."""
    try:
        return b"".join(iter(lambda: reader.read(piece), b""))
    finally:
        reader.close()
