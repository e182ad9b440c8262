"""Layer bytes: telling gzip, zstd and plain tar apart, and staging a layer into a store.

Staging reads the blob once, checking both digests on the way: the blob's own (as stored)
and the diff_id (sha256 of the uncompressed tar, OCI image-spec config.md).
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import zstandard

from bundler import mediatypes
from bundler.digest import CHUNK
from bundler.errors import DigestMismatch
from bundler.image import Layer
from bundler.readahead import Ahead

if TYPE_CHECKING:  # annotations only: verify and place, which read layers, keep no cache
    from bundler.cache import BlobStore

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
    chunks = Ahead(_inflate(raw, what), "inflate") if pipelined else None
    try:
        read = chunks.next if chunks else _inflate(raw, what).__next__
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


def _inflate(raw: BinaryIO, what: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """The plain chunks of `raw`, then `raw` read to its end (see uncompressed_digest)."""
    plain = decompressed(raw, chunk_size)
    try:
        while chunk := read_plain(plain, what, chunk_size):
            yield chunk
    except DigestMismatch:
        drain(raw)
        raise
    drain(raw)


# Layers from this size (as stored) are staged on two threads; below it a thread's start
# costs more than it saves.
PIPELINE_SIZE = 4 << 20


def stage(layer: Layer, store: BlobStore, uncompressed: bool, what: str) -> None:
    """Copy the layer into `store` (under its diff_id when `uncompressed`, else under its own
    digest); both digests are checked. On any failure nothing is added to the store."""
    src = layer.open()
    try:
        with store.writer() as pending:
            tee = Tee(src, None if uncompressed else pending.write)
            actual = uncompressed_digest(tee, what, pending.write if uncompressed else None,
                                         pipelined=layer.descriptor.size >= PIPELINE_SIZE)
            check_diff_id(layer, actual, what)
            digest = layer.diff_id if uncompressed else layer.descriptor.digest
            pending.commit(store.path(digest))
    finally:
        src.close()


def check_diff_id(layer: Layer, actual: str, what: str) -> None:
    if actual != layer.diff_id:
        raise DigestMismatch(
            f"{what}: diff_id mismatch: config says {layer.diff_id}, uncompressed layer is {actual}"
        )


# A gzip layer of this size or more (as stored) is not staged before a compact bundle's body
# reaches it: its blob is downloaded as it is, then inflated straight into the compressor
# (sinks/bundle.py). Staging a 1 GiB layer first made the build 2.4x zstd's time on the
# finished tar; below this size a layer's staging takes well under a second and overlaps the
# compression of the layers before it.
STREAM_SIZE = 64 << 20

# What a streamed layer holds in memory besides the compressor: chunks of this size, at most
# STREAM_DEPTH of them waiting between the inflating thread and the compressor's. Staging's
# 1 MiB chunks, four ahead, cost 10 MiB of peak memory here (1 GiB layer, level 3: 94 against
# 84 MiB staged), where the compressor is already running; these cost about 1 MiB.
STREAM_CHUNK = 256 << 10
STREAM_DEPTH = 2

_GZIP_LAYER_TYPES = (mediatypes.OCI_LAYER_GZIP, mediatypes.DOCKER_LAYER_GZIP)
_GZIP_TRAILER = 8  # CRC-32, ISIZE (RFC 1952 2.2)
_GZIP_MIN = 10 + 2 + _GZIP_TRAILER  # header, the least deflate stream, trailer


def streams(layer: Layer) -> bool:
    """Whether a compact build inflates this layer into its compressor instead of staging it:
    a big layer whose manifest says gzip (what it really is is sniffed once it is on disk)."""
    return layer.descriptor.media_type in _GZIP_LAYER_TYPES and \
        layer.descriptor.size >= STREAM_SIZE


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


class Mispredicted(Exception):
    """A streamed layer was not the size its gzip trailer predicted, or its plain copy could
    not be stored: what was compressed of it is wrong, and it must be staged the normal way.
    Never a user-facing error: the bundle writer stages the layer and starts the frame again."""

    def __init__(self, streamed: StreamedLayer, reason: str):
        super().__init__(f"{streamed.what}: {reason}")
        self.layer = streamed.layer


class StreamedLayer:
    """A gzip layer blob on disk, read as the plain tar it holds, `size` bytes as predicted.

    The reader inflates on a thread of its own (as staging does), hashes the plain bytes
    against the diff_id and writes them into `store` as they pass: when it has given exactly
    `size` bytes and reached the end, the copy is committed under the diff_id, as stage()
    would have committed it. More bytes than `size`, fewer, or a failed store write raise
    Mispredicted as soon as they are seen; a diff_id mismatch or bytes that do not inflate are
    stage()'s errors, with its messages. Nothing is added to the store unless every check
    passed.
    """

    def __init__(self, path: Path, layer: Layer, store: BlobStore, what: str, size: int):
        self.path, self.layer, self.size, self.what = path, layer, size, what
        self.store = store

    @classmethod
    def of(cls, path: Path, layer: Layer, store: BlobStore, what: str) -> StreamedLayer | None:
        """The layer in `path` to stream, or None to stage it instead: it is not gzip, or its
        trailer is surely not its size.

        zlib's and Go's gzip output is never twice the size of its input (stored blocks
        add 5 bytes in 64 KiB), so a trailer saying less than half the blob is the last of
        several members, or a layer of 4 GiB and more: known now, before any of it is
        compressed, it costs no restart. A stranger encoder merely gets its layer staged.
        """
        size = predicted_size(path)
        if size is None or size < path.stat().st_size // 2:
            return None
        return cls(path, layer, store, what, size)

    def open(self) -> _StreamReader:
        return _StreamReader(self)


class _StreamReader:
    def __init__(self, streamed: StreamedLayer):
        self._of = streamed
        self._hash = hashlib.sha256()
        self._count = 0
        self._chunk, self._pos = b"", 0
        self._done = False
        self._raw = open(streamed.path, "rb")
        self._chunks: Ahead | None = None
        self._pending = None
        try:
            self._pending = streamed.store.writer()
        except OSError as e:
            self.close()
            raise Mispredicted(streamed, f"cannot store its plain copy ({e})") from None
        self._chunks = Ahead(_inflate(self._raw, streamed.what, STREAM_CHUNK), "inflate",
                             STREAM_DEPTH)

    def read(self, n: int = CHUNK) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        while self._pos >= len(self._chunk):
            if self._done:
                return b""
            chunk = self._chunks.next()
            if chunk is None:
                self._finish()
                return b""
            self._take(chunk)
        if self._pos == 0 and n >= len(self._chunk):
            self._pos = len(self._chunk)
            return self._chunk
        data = self._chunk[self._pos : self._pos + n]
        self._pos += len(data)
        return data

    def _take(self, chunk: bytes) -> None:
        of = self._of
        self._count += len(chunk)
        if self._count > of.size:
            raise Mispredicted(of, f"more than the {of.size} bytes its gzip trailer says")
        self._hash.update(chunk)
        try:
            self._pending.write(chunk)
        except OSError as e:
            raise Mispredicted(of, f"cannot store its plain copy ({e})") from None
        self._chunk, self._pos = chunk, 0

    def _finish(self) -> None:
        of = self._of
        if self._count != of.size:
            raise Mispredicted(of, f"{self._count} bytes, not the {of.size} its gzip "
                                         "trailer says")
        check_diff_id(of.layer, "sha256:" + self._hash.hexdigest(), of.what)
        try:
            self._pending.commit(of.store.path(of.layer.diff_id))
        except OSError as e:
            raise Mispredicted(of, f"cannot store its plain copy ({e})") from None
        self._done = True

    def close(self) -> None:
        if self._chunks is not None:
            # The inflating thread reads self._raw: it must be done before the file closes.
            self._chunks.stop(wait=True)
        self._raw.close()
        if self._pending is not None:
            self._pending.close()  # drops the copy unless it was committed
