"""decompress.GzipReader against Python's gzip module: the same content, the same refusals, except
where Go's compress/gzip (containerd's reader) refuses what Python accepts: then refused."""

import gzip
import io
import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler import decompress
from bundler.errors import DigestMismatch


def _ours(blob: bytes, n: int = 1 << 20, read_size: int = 1 << 20) -> bytes:
    reader = decompress.GzipReader(io.BytesIO(blob), read_size)
    out = []
    while chunk := decompress.read_plain(_Capped(reader, n), "L"):
        assert len(chunk) <= n
        out.append(chunk)
    return b"".join(out)


class _Capped:
    def __init__(self, reader, n):
        self._reader, self._n = reader, n

    def read(self, n):
        return self._reader.read(min(n, self._n))


def _theirs(blob: bytes) -> bytes:
    return gzip.GzipFile(fileobj=io.BytesIO(blob)).read()


def _member(data: bytes, **kw) -> bytes:
    return gzip.compress(data, mtime=0, **kw)


def _with_header(flags: int, extra: bytes, data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    return (b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff" + extra + body
            + struct.pack("<II", zlib.crc32(data), len(data)))


DATA = random.Random(5).randbytes(200_000) + b"text " * 100_000
CASES = {
    "one member": _member(DATA),
    "empty member": _member(b""),
    "three members": _member(DATA[:1000]) + _member(b"") + _member(DATA),
    "FNAME": _with_header(0x08, b"A" * 511 + b"\0", DATA[:5000]),
    "FEXTRA and FCOMMENT": _with_header(0x14, b"\x03\0xyz" + b"comment\0", b"hello"),
}
# Python's gzip module reads these; Go's refuses them (containerd: "gzip: invalid header").
GO_REFUSES = {
    "zero padding": (_member(DATA) + bytes(1000), "not another member"),
    "member, zeros, member": (_member(b"abc") + bytes(7) + _member(b"def"),
                              "not another member"),
    "FNAME of 512 bytes": (_with_header(0x08, b"A" * 512 + b"\0", DATA[:5000]), "512 bytes"),
    "FCOMMENT of 100,000 bytes": (_with_header(0x10, b"A" * 100_000 + b"\0", b"x"),
                                  "512 bytes"),
    "10,001 members": (_member(b"") * 10_001, "more than 10000 gzip members"),
}


@pytest.mark.parametrize("name", GO_REFUSES)
def test_refuses_what_go_refuses(name):
    blob, fragment = GO_REFUSES[name]
    _theirs(blob)  # Python reads it
    with pytest.raises(DigestMismatch, match=fragment):
        _ours(blob)
    with pytest.raises(DigestMismatch, match=fragment):
        _ours(blob, n=1000, read_size=333)


@pytest.mark.parametrize("name", CASES)
def test_reads_what_gzip_reads(name):
    blob = CASES[name]
    assert _ours(blob) == _theirs(blob)
    assert _ours(blob, n=1000, read_size=333) == _theirs(blob)


BAD = {
    "truncated": _member(DATA)[:-3],
    "cut in the deflate stream": _member(DATA)[:5000],
    "bad CRC": _member(DATA)[:-8] + b"\0\0\0\0" + _member(DATA)[-4:],
    "bad ISIZE": _member(DATA)[:-4] + b"\0\0\0\0",
    "garbage after a member": _member(DATA) + b"garbage",
    "half a second header": _member(DATA) + b"\x1f",
    "not deflate": b"\x1f\x8b\x07" + _member(b"x")[3:],
}


@pytest.mark.parametrize("name", BAD)
def test_refuses_what_gzip_refuses(name):
    blob = BAD[name]
    with pytest.raises((gzip.BadGzipFile, EOFError, zlib.error)):
        _theirs(blob)
    with pytest.raises(DigestMismatch, match="L: cannot decompress"):
        _ours(blob)


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.tuples(st.binary(max_size=3000), st.just(0)), min_size=1,
                      max_size=4),
       cut=st.integers(0, 10_000), n=st.integers(1, 5000), read_size=st.integers(1, 4000))
def test_same_as_gzip_on_any_cut(parts, cut, n, read_size):
    blob = b"".join(_member(d) + bytes(z) for d, z in parts)
    blob = blob[: len(blob) - cut % (len(blob) + 1)]
    try:
        want = _theirs(blob)
    except (gzip.BadGzipFile, EOFError, zlib.error):
        want = None
    if want is None or not blob:
        if blob:
            with pytest.raises(DigestMismatch):
                _ours(blob, n, read_size)
        return
    assert _ours(blob, n, read_size) == want


class _Checked:
    """A raw blob reader that fails at its end, as a VerifyingReader of a wrong blob does."""

    def __init__(self, data: bytes, bad: bool):
        self._f, self._bad = io.BytesIO(data), bad

    def read(self, n=1 << 20):
        data = self._f.read(n)
        if not data and self._bad:
            raise DigestMismatch("L: digest mismatch (the blob's own)")
        return data


@pytest.mark.parametrize("pipelined", [False, True])
def test_uncompressed_digest_pipelined_or_not(pipelined):
    import hashlib

    import zstandard

    plain = DATA * 20  # 30 MB: several chunks ahead of the hashing thread
    want = "sha256:" + hashlib.sha256(plain).hexdigest()
    for blob in (_member(plain, compresslevel=1), zstandard.ZstdCompressor().compress(plain),
                 plain):
        got = []
        assert decompress.uncompressed_digest(io.BytesIO(blob), "L", got.append,
                                         pipelined=pipelined) == want
        assert b"".join(got) == plain
    broken = _member(plain, compresslevel=1)[:-100]
    with pytest.raises(DigestMismatch, match="L: cannot decompress"):
        decompress.uncompressed_digest(_Checked(broken, False), "L", pipelined=pipelined)
    # A blob that fails its own digest is the better explanation than its decode error.
    with pytest.raises(DigestMismatch, match="the blob's own"):
        decompress.uncompressed_digest(_Checked(broken, True), "L", pipelined=pipelined)
    with pytest.raises(DigestMismatch, match="the blob's own"):
        decompress.uncompressed_digest(_Checked(_member(plain), True), "L", pipelined=pipelined)


def test_a_failing_consumer_stops_the_inflating_thread():
    import threading

    def full(_chunk):
        raise OSError(28, "No space left on device")

    before = threading.active_count()
    with pytest.raises(OSError, match="No space"):
        decompress.uncompressed_digest(io.BytesIO(_member(DATA * 20, compresslevel=1)), "L", full,
                                  pipelined=True)
    import time

    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
