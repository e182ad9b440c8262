"""Layer blobs read as the tar they hold: gzip, zstd or plain sniffed as containerd sniffs
them, gzip read as Go's compress/gzip reads it, and the sha256 of the uncompressed content
(the diff_id a layer should have, OCI image-spec config.md).

Staging (bundler/stage.py) and verify read layers through these; nothing here writes.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from bundler.digest import CHUNK
from bundler.errors import DigestMismatch
from bundler.readahead import Ahead

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Peek:
    """A reader that lets the first bytes be looked at and then read again."""

    def __init__(self, raw: BinaryIO, n: int = 4):
        self._raw = raw
        self.head = b""
        while len(self.head) < n and (more := raw.read(n - len(self.head))):
            self.head += more
        self._pos = 0

    def read(self, n: int = CHUNK) -> bytes:
        if self._pos < len(self.head):
            data = self.head[self._pos : self._pos + (n if n and n > 0 else len(self.head))]
            self._pos += len(data)
            return data
        return self._raw.read(n)


class Tee:
    """Reads from `raw`, handing every chunk to `sink` (a hash's update, a file's write)."""

    def __init__(self, raw: BinaryIO, sink: Callable[[bytes], object] | None):
        self._raw = raw
        self._sink = sink

    def read(self, n: int = CHUNK) -> bytes:
        data = self._raw.read(n)
        if data and self._sink is not None:
            self._sink(data)
        return data


def compression(head: bytes) -> str:
    """"gzip", "zstd" or "plain", sniffed from a blob's first 4 bytes as containerd sniffs
    them: a zstd stream may start with a skippable frame (magic 0x184D2A5?), which
    containerd's DetectCompression takes for zstd, and so must we."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC) or (len(head) >= 4 and head[0] & 0xF0 == 0x50
                                       and head[1:4] == b"\x2a\x4d\x18"):
        return "zstd"
    return "plain"


def is_compressed(head: bytes) -> bool:
    return compression(head) != "plain"


def decompressed(raw: BinaryIO, read_size: int = CHUNK) -> BinaryIO:
    """The uncompressed tar stream of a layer blob, whatever its compression (sniffed);
    `raw` is read `read_size` bytes at a time."""
    peek = raw if isinstance(raw, Peek) else Peek(raw)
    kind = compression(peek.head)
    if kind == "gzip":
        return GzipReader(peek, read_size)
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(peek, read_size=read_size,
                                                          read_across_frames=True)
    return peek


class GzipError(Exception):
    """The gzip stream is malformed or cut short."""


class GzipReader:
    """A gzip stream's content, members one after another, as Go's compress/gzip (which
    containerd unpacks layers with) reads it, or refused.

    zlib parses each member's header and checks its trailer (CRC-32 and ISIZE) in C: the gzip
    module's Python layers cost as much as inflating itself on the small layers of many images
    and read a long FNAME field one byte at a time. Where Python's gzip module and
    Go's disagree, the input is refused: anything after a member other than another member
    (Python skips zero padding, Go fails), an FNAME or FCOMMENT of 512 bytes or more (Go's
    limit), a header CRC that does not match, reserved flag bits. At most MAX_MEMBERS members:
    an empty member inflates to nothing, so the inflation limit alone would not bound them.
    """

    MAX_MEMBERS = 10_000
    _FEXTRA, _FNAME, _FCOMMENT = 4, 8, 16

    def __init__(self, raw: BinaryIO, read_size: int = CHUNK):
        self._raw = raw
        self._read_size = read_size
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._pending = b""  # compressed bytes read but not yet given to zlib
        self._in_member = True
        self._eof = False
        self._members = 1
        self._started = False  # the first header is checked on the first read

    def read(self, n: int = CHUNK) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        if not self._started:
            self._started = True
            self._check_header()
        while not self._eof and n:
            if not self._in_member:
                self._next_member()
                continue
            before = len(self._pending)
            data = self._inflate.decompress(self._pending, n)
            # Input zlib did not take yet (output capped at n) comes back first next time.
            self._pending = self._inflate.unconsumed_tail
            if self._inflate.eof:
                # All of what this call gave past the member's end (unconsumed_tail may still
                # hold a stale copy of part of it).
                self._pending = self._inflate.unused_data
                self._in_member = False
            if data:
                return data
            if self._in_member and (not self._pending or len(self._pending) == before):
                # zlib gave all it had (output it held back under the cap included): it
                # needs more input.
                more = self._raw.read(self._read_size)
                if not more:
                    raise GzipError("ended inside a gzip member")
                self._pending += more
        return b""

    def _next_member(self) -> None:
        """After a member: the end of the stream, or the next member's header."""
        if not self._pending:
            self._pending = self._raw.read(self._read_size)
            if not self._pending:
                self._eof = True
                return
        self._members += 1
        if self._members > self.MAX_MEMBERS:
            raise GzipError(f"more than {self.MAX_MEMBERS} gzip members")
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._in_member = True
        self._check_header()

    def _check_header(self) -> None:
        """Refuse a member header Go reads otherwise (zlib checks the rest of it)."""
        self._fill(10)
        head = self._pending
        if head[:2] != GZIP_MAGIC:
            raise GzipError("data after a gzip member that is not another member")
        flags, pos = head[3], 10
        if flags & self._FEXTRA:
            self._fill(pos + 2)
            pos += 2 + int.from_bytes(self._pending[pos:pos + 2], "little")
        for flag in (self._FNAME, self._FCOMMENT):
            if flags & flag:
                # Go reads these NUL-terminated strings into a 512-byte buffer.
                self._fill(pos + 512)
                end = self._pending.find(b"\0", pos, pos + 512)
                if end < 0:
                    raise GzipError("gzip header name or comment of 512 bytes or more")
                pos = end + 1

    def _fill(self, n: int) -> None:
        while len(self._pending) < n:
            more = self._raw.read(max(self._read_size, n - len(self._pending)))
            if not more:
                if len(self._pending) < 10:
                    raise GzipError("ended inside a gzip header")
                return
            self._pending += more


def read_plain(plain: BinaryIO, what: str, n: int = CHUNK) -> bytes:
    # Only decoder errors are the layer's fault; an OSError such as a full disk is not.
    try:
        return plain.read(n)
    except (GzipError, zlib.error, zstandard.ZstdError) as e:
        raise DigestMismatch(f"{what}: cannot decompress ({e})") from None


def drain(reader: BinaryIO) -> None:
    while reader.read(CHUNK):
        pass


def uncompressed_digest(raw: BinaryIO, what: str,
                        on_plain: Callable[[bytes], object] | None = None,
                        pipelined: bool = False) -> str:
    """Read a layer blob to its end; the sha256 of its uncompressed content (the diff_id it
    should have). `on_plain` gets every uncompressed chunk. A decode error is raised only
    after `raw` was read to its end: if `raw` checks its own digest, a blob that fails it is
    the better explanation and is raised instead.

    `pipelined`: `raw` is read and decompressed on a thread of its own while this one hashes
    and hands on the plain bytes, so a big layer is staged on two cores (zlib, zstd and
    hashlib release the GIL on big buffers). The result, and every error, are the same."""
    h = hashlib.sha256()
    chunks = Ahead(plain_chunks(raw, what), "inflate") if pipelined else None
    try:
        read = chunks.next if chunks else plain_chunks(raw, what).__next__
        while True:
            try:
                chunk = read()
            except StopIteration:
                break
            if chunk is None:
                break
            h.update(chunk)
            if on_plain:
                on_plain(chunk)
    finally:
        if chunks:
            chunks.stop()
    return "sha256:" + h.hexdigest()


def plain_chunks(raw: BinaryIO, what: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """The plain chunks of `raw`, then `raw` read to its end (see uncompressed_digest)."""
    plain = decompressed(raw, chunk_size)
    try:
        while chunk := read_plain(plain, what, chunk_size):
            yield chunk
    except DigestMismatch:
        drain(raw)
        raise
    drain(raw)


_GZIP_TRAILER = 8  # CRC-32, ISIZE (RFC 1952 2.2)
_GZIP_MIN = 10 + 2 + _GZIP_TRAILER  # header, the least deflate stream, trailer


def predicted_size(path: Path) -> int | None:
    """The uncompressed size a gzip blob's trailer records, or None if the blob is not gzip.

    ISIZE (RFC 1952 2.3.1) is the size mod 2^32 of the LAST member's content: right for the
    usual single-member layer under 4 GiB, too small for several members or 4 GiB and more.
    The stream that reads the layer checks it (Mispredicted).
    """
    with open(path, "rb") as f:
        head = f.read(len(GZIP_MAGIC))
        if head != GZIP_MAGIC or os.fstat(f.fileno()).st_size < _GZIP_MIN:
            return None
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")
