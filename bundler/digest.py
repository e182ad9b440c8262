"""Content digests: parsing, and streams that check bytes against the digest naming them.

Every byte that crosses a boundary (registry, cache, bundle) passes through one of these.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import re
import threading
from typing import BinaryIO

from bundler.errors import DigestMismatch

# Only sha256 is accepted: it is what registries, containerd and K3s use, and a digest we
# cannot check would be a promise we cannot keep.
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
CHUNK = 1 << 20


def sha256_digest(data: bytes) -> str:
    """The `sha256:<hex>` digest of a small in-memory document (manifest, config)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    """The hex part of `sha256:<hex>`, as used in `blobs/sha256/<hex>`."""
    return digest.split(":", 1)[1]


def check(data: bytes, digest: str, what: str) -> None:
    """Raise DigestMismatch naming `what` unless `data` hashes to `digest`."""
    actual = sha256_digest(data)
    if actual != digest:
        raise DigestMismatch(f"{what}: digest mismatch: expected {digest}, got {actual}")


def hash_rest(f: BinaryIO) -> hashlib._Hash:
    """The sha256 of what is left to read in `f`, read in CHUNK pieces."""
    h = hashlib.sha256()
    while chunk := f.read(CHUNK):
        h.update(chunk)
    return h


class VerifyingReader:
    """Reads `size` bytes from `raw`, raising DigestMismatch on more, fewer, or other bytes.

    The check happens when the stream reaches its end, so a caller must read to EOF (read()
    returning b"") before trusting what it consumed.
    """

    def __init__(self, raw: BinaryIO, digest: str, size: int | None, what: str):
        self._raw = raw
        self._digest = digest
        self._size = size
        self._what = what
        self._hash = hashlib.sha256()
        self._read = 0
        self._done = False

    def read(self, n: int = CHUNK) -> bytes:
        # read(0) is b"" (io's meaning), not the end: passed on as raw.read(0) it would
        # return b"" and be taken for EOF, failing a good stream as too short.
        if n == 0 or self._done or (self._size is not None and self._read > self._size):
            return b""  # never ask `raw` for read(0), which some readers take as read-all
        if n is None or n < 0:
            n = CHUNK
        if self._size is not None:
            # Ask for one byte past the end so an overlong body is noticed.
            n = min(n, self._size - self._read + 1)
        data = self._raw.read(n)
        if data:
            self._read += len(data)
            if self._size is not None and self._read > self._size:
                raise DigestMismatch(f"{self._what}: more than the expected {self._size} bytes")
            self._hash.update(data)
            return data
        self._done = True
        if self._size is not None and self._read != self._size:
            raise DigestMismatch(
                f"{self._what}: size mismatch: expected {self._size} bytes, got {self._read}"
            )
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._digest:
            raise DigestMismatch(
                f"{self._what}: digest mismatch: expected {self._digest}, got {actual}"
            )
        return b""

    def close(self) -> None:
        close = getattr(self._raw, "close", None)
        if close:
            close()


class HashingWriter:
    """Passes writes through to `raw` while counting and hashing them."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self._raw.write(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()

    def mark(self) -> tuple[int, hashlib._Hash, int]:
        """Where the output is now, for rewind(); `raw` must be a seekable file."""
        return self._raw.tell(), self.hash.copy(), self.size

    def rewind(self, mark: tuple[int, hashlib._Hash, int]) -> None:
        """Take back everything written since mark(), as if it never was."""
        position, hashed, self.size = mark
        self._raw.seek(position)
        self._raw.truncate()
        self.hash = hashed.copy()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class Sha256Behind:
    """A sha256 computed on a thread of its own from the pieces update() hands it, in order.

    sha256 releases the GIL: hashing runs on another core while the bytes are read and
    written (hashed in line, a copy that checks what it copies takes twice a plain copy's
    time). Plain threads and a queue, not concurrent.futures, which loads logging: the offline
    commands leave it out. At most _AHEAD pieces wait to be hashed."""

    def __init__(self, name: str):
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | tuple[int, int, int] | None] = queue.Queue(
            maxsize=_AHEAD)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            if isinstance(piece, bytes):
                self._hash.update(piece)
            elif self._error is None:
                try:
                    self._hash_range(*piece)
                except OSError as e:
                    self._error = e

    def _hash_range(self, fd: int, offset: int, size: int) -> None:
        while size:
            chunk = os.pread(fd, min(size, CHUNK), offset)
            if not chunk:
                raise OSError(errno.EIO, "file shorter than what was written to it")
            self._hash.update(chunk)
            offset += len(chunk)
            size -= len(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def update_from(self, fd: int, offset: int, size: int) -> None:
        """Hash `size` bytes of the file `fd` from `offset` next, read by the hashing thread
        (a range just written by copy_file_range: what is hashed is what the file holds)."""
        self._queue.put((fd, offset, size))

    def hexdigest(self) -> str:
        self.close()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def __enter__(self) -> Sha256Behind:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_AHEAD = 4
