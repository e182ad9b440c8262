"""Chunks produced on a thread of their own, a few ahead of the thread that uses them.

zlib, zstd and hashlib release the GIL on big buffers, so decompressing on one thread while
hashing (or checking) on another uses both cores. Memory stays bounded: at most `depth` chunks
wait in between. The producer's error is raised where the consumer reads, in order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO

from bundler.digest import CHUNK

DEPTH = 4
_END = object()


class Ahead:
    """The items of `chunks`, produced on a daemon thread; next() gives them, then None.

    A deque under one condition, not queue.Queue: the end and an error stay at its head for
    every later call to see, and stop() wakes a waiting producer at once (queue costs verify
    0.3 MiB of imports, too)."""

    def __init__(self, chunks: Iterator[bytes], name: str, depth: int = DEPTH):
        self._items: deque = deque()
        self._depth = depth
        self._changed = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, args=(chunks,), daemon=True,
                                        name=name)
        self._thread.start()

    def _run(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                if not self._put(chunk):
                    return
            self._put(_END)
        except BaseException as e:  # noqa: BLE001 - raised in the consumer's thread
            self._put(e)

    def _put(self, item: object) -> bool:
        with self._changed:
            while len(self._items) >= self._depth and not self._stopped:
                self._changed.wait()
            if self._stopped:
                return False
            self._items.append(item)
            self._changed.notify_all()
            return True

    def next(self) -> bytes | None:
        with self._changed:
            while not self._items:
                self._changed.wait()
            item = self._items[0]
            # The end and an error stay: the producer has ended, and a consumer that reads on
            # after an error (layer drains a blob it could not decode) must not wait for ever.
            if item is not _END and not isinstance(item, BaseException):
                self._items.popleft()
                self._changed.notify_all()
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self, wait: bool = False) -> None:
        """The consumer is done (or failed): the thread ends at its next chunk; with `wait`,
        it has ended when this returns (what it read from is the caller's again)."""
        with self._changed:
            self._stopped = True
            self._items.clear()
            self._changed.notify_all()
        if wait:
            self._thread.join()


class AheadReader:
    """A file-like view of `raw` read `chunk` bytes at a time, up to `depth` chunks ahead, on
    a thread of its own. At most depth + 2 chunks are alive at once (queued, being produced,
    being consumed)."""

    def __init__(self, raw: BinaryIO, name: str, depth: int = DEPTH, chunk: int = CHUNK):
        self._ahead = Ahead(iter(lambda: raw.read(chunk), b""), name, depth)
        self._buffer = memoryview(b"")
        self._ended = False

    def read(self, n: int = CHUNK) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        while not self._buffer:
            if self._ended:
                return b""
            chunk = self._ahead.next()
            if chunk is None:
                self._ended = True
                return b""
            if n >= len(chunk):
                return chunk  # whole, as produced: no copy (each is a fresh allocation)
            self._buffer = memoryview(chunk)
        data = self._buffer[:n].tobytes()
        self._buffer = self._buffer[n:]
        return data

    def stop(self) -> None:
        """Stop reading ahead and wait for the thread: `raw` is the caller's again."""
        self._ahead.stop(wait=True)


class Pipe:
    """Chunks written on one thread, read as a file on another: the reverse of AheadReader.
    write() waits while `depth` chunks wait to be read, so memory stays bounded; after the
    reader stop()s, writes are dropped (the reader reports what it missed)."""

    def __init__(self, depth: int = DEPTH):
        self._items: deque = deque()
        self._depth = depth
        self._changed = threading.Condition()
        self._closed = False
        self._stopped = False
        self._buffer = memoryview(b"")

    def write(self, chunk: bytes) -> None:
        with self._changed:
            while len(self._items) >= self._depth and not self._stopped:
                self._changed.wait()
            if not self._stopped:
                self._items.append(chunk)
                self._changed.notify_all()

    def close(self) -> None:
        """No more writes: the reader gets what waits, then the end."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def stop(self) -> None:
        """The reader is done: a waiting writer is released, later writes are dropped."""
        with self._changed:
            self._stopped = True
            self._items.clear()
            self._changed.notify_all()

    def read(self, n: int = CHUNK) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        while not self._buffer:
            with self._changed:
                while not self._items and not self._closed and not self._stopped:
                    self._changed.wait()
                if not self._items:
                    return b""
                chunk = self._items.popleft()
                self._changed.notify_all()
            if n >= len(chunk):
                return chunk
            self._buffer = memoryview(chunk)
        data = self._buffer[:n].tobytes()
        self._buffer = self._buffer[n:]
        return data
