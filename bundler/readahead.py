"""Chunks produced on a thread of their own, a few ahead of the thread that uses them.

zlib, zstd and hashlib release the GIL on big buffers, so decompressing on one thread while
hashing (or checking) on another uses both cores. Memory stays bounded: at most `depth` chunks
wait in between. The producer's error is raised where the consumer reads, in order.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import BinaryIO

from bundler.digest import CHUNK

DEPTH = 4
_END = object()


class Ahead:
    """The items of `chunks`, produced on a daemon thread; next() gives them, then None."""

    def __init__(self, chunks: Iterator[bytes], name: str, depth: int = DEPTH):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stopped = threading.Event()
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
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self) -> bytes | None:
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # every later call sees the end too
            return None
        if isinstance(item, BaseException):
            # Every later call raises it too: the producer has ended, and a consumer that
            # reads on after an error (layer drains a blob it could not decode) would wait
            # for ever on an empty queue.
            self._queue.put(item)
            raise item
        return item

    def stop(self, wait: bool = False) -> None:
        """The consumer is done (or failed): the thread ends at its next chunk; with `wait`,
        it has ended when this returns (what it read from is the caller's again)."""
        self._stopped.set()
        while True:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            if not wait or not self._thread.is_alive():
                return
            self._thread.join(0.05)


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
