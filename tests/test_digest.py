import hashlib
import io
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.digest import (
    CHUNK,
    HashingWriter,
    VerifyingReader,
    check,
    hash_rest,
    hex_of,
    sha256_digest,
)
from bundler.errors import DigestMismatch
from tests.streams import Recording

DATA = b"layer bytes" * 1000
GOOD = "sha256:" + hashlib.sha256(DATA).hexdigest()


def _drain(reader):
    while reader.read(100):
        pass


def test_good_stream_passes():
    _drain(VerifyingReader(io.BytesIO(DATA), GOOD, len(DATA), "blob"))


@pytest.mark.parametrize(("data", "size", "fragment"), [
    (DATA[:-1] + b"X", len(DATA), "digest mismatch"),
    (DATA[:-1], len(DATA), "size mismatch"),
    (DATA + b"!", len(DATA), "more than the expected"),
])
def test_bad_streams_fail_naming_the_blob(data, size, fragment):
    with pytest.raises(DigestMismatch, match=f"img: layer 0: {fragment}"):
        _drain(VerifyingReader(io.BytesIO(data), GOOD, size, "img: layer 0"))


def test_rewind_takes_back_what_was_written_since_mark(tmp_path):
    with open(tmp_path / "out", "wb") as f:
        w = HashingWriter(f)
        w.write(b"kept ")
        mark = w.mark()
        w.write(b"taken back")
        w.rewind(mark)
        w.write(b"after")
    assert (tmp_path / "out").read_bytes() == b"kept after"
    assert w.size == len(b"kept after")
    assert w.digest == "sha256:" + hashlib.sha256(b"kept after").hexdigest()


def _read_all(reader, n):
    parts = []
    while part := reader.read(n):
        assert n is None or n < 0 or len(part) <= n
        parts.append(part)
    return b"".join(parts)


@pytest.mark.parametrize("size", [len(DATA), None])
@pytest.mark.parametrize("n", [1, 100, 4096, -1, None])
def test_read_returns_the_bytes_in_pieces_of_at_most_n(size, n):
    raw = Recording(DATA)
    reader = VerifyingReader(raw, GOOD, size, "blob")
    assert _read_all(reader, n) == DATA
    # Past the end: b"" again, and `raw` is not asked again (a socket could block).
    asked = len(raw.asked)
    assert reader.read(n) == b"" and reader.read() == b""
    assert len(raw.asked) == asked


@pytest.mark.parametrize("piece", [-1, 1000])
def test_raw_is_asked_for_bounded_pieces_and_one_byte_past_the_end(piece):
    raw = Recording(DATA + b"trailing bytes the registry should not have sent", piece)
    reader = VerifyingReader(raw, GOOD, len(DATA), "blob")
    with pytest.raises(DigestMismatch, match="more than the expected"):
        _read_all(reader, -1)
    got = 0
    for asked, returned in zip(raw.asked, raw.given, strict=True):
        assert isinstance(asked, int) and 0 < asked <= min(CHUNK, len(DATA) - got + 1)
        got += returned
    assert got == len(DATA) + 1
    # After the refusal nothing more is read, and never read(0) (some streams read all).
    asked = len(raw.asked)
    assert reader.read() == b""
    assert len(raw.asked) == asked and 0 not in raw.asked


def test_unsized_reads_ask_for_a_chunk_at_most():
    raw = Recording(bytes(3 * CHUNK))
    reader = VerifyingReader(raw, sha256_digest(bytes(3 * CHUNK)), None, "blob")
    assert len(_read_all(reader, None)) == 3 * CHUNK
    assert raw.asked and all(asked == CHUNK for asked in raw.asked)


def test_read_zero_is_empty_and_not_the_end():
    raw = Recording(DATA)
    reader = VerifyingReader(raw, GOOD, len(DATA), "blob")
    assert reader.read(10) == DATA[:10]
    assert reader.read(0) == b""
    assert 0 not in raw.asked
    assert reader.read(10) + _read_all(reader, 100) == DATA[10:]


def test_unsized_stream_is_still_checked_against_its_digest():
    _read_all(VerifyingReader(io.BytesIO(DATA), GOOD, None, "blob"), 100)
    with pytest.raises(DigestMismatch, match=f"blob: digest mismatch: expected {GOOD}, got "
                                             f"{sha256_digest(DATA[:-1])}"):
        _read_all(VerifyingReader(io.BytesIO(DATA[:-1]), GOOD, None, "blob"), 100)


def test_close_closes_the_raw_stream_and_tolerates_one_without_close():
    raw = io.BytesIO(DATA)
    VerifyingReader(raw, GOOD, len(DATA), "blob").close()
    assert raw.closed

    class NoClose:
        def read(self, n):
            return b""

    VerifyingReader(NoClose(), GOOD, 0, "blob").close()


EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_sha256_digest_hex_of_and_check():
    assert sha256_digest(b"") == EMPTY
    assert sha256_digest(DATA) == GOOD
    assert hex_of(EMPTY) == EMPTY[len("sha256:"):]
    assert hex_of("sha256:a:b") == "a:b"
    check(DATA, GOOD, "config")
    with pytest.raises(DigestMismatch) as e:
        check(DATA + b"x", GOOD, "img: config")
    assert str(e.value) == (f"img: config: digest mismatch: expected {GOOD}, "
                            f"got {sha256_digest(DATA + b'x')}")


def test_hash_rest_hashes_what_is_left_in_chunks():
    data = bytes(range(256)) * (CHUNK // 128 + 3)  # more than two chunks, not a multiple
    raw = Recording(data)
    raw.read(7)
    assert "sha256:" + hash_rest(raw).hexdigest() == sha256_digest(data[7:])
    assert raw.asked[1:] and all(asked == CHUNK for asked in raw.asked[1:])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), declared=st.binary(max_size=3000),
       size_known=st.booleans(), piece=st.integers(1, 4000),
       reads=st.lists(st.one_of(st.integers(0, 5000), st.just(-1), st.none()), min_size=1)
       .filter(lambda reads: any(n != 0 for n in reads)))
def test_any_body_is_its_declared_bytes_or_a_mismatch(data, declared, size_known, piece, reads):
    """Whatever a registry sends and however the caller reads it, the reader gives back the
    declared blob exactly, or raises DigestMismatch; it never hands out a byte past the
    declared size, and asks for at most one byte past it."""
    size = len(declared) if size_known else None
    raw = Recording(data, piece)
    reader = VerifyingReader(raw, sha256_digest(declared), size, "blob")
    out = b""
    try:
        for i in itertools.count():
            n = reads[i % len(reads)]
            part = reader.read(n)
            out += part
            assert size is None or len(out) <= size
            if n == 0:
                assert part == b""  # read(0) is empty, and not the end
            elif not part:
                break
    except DigestMismatch:
        assert data != declared
        if size is not None:
            assert sum(raw.given) <= size + 1
        return
    assert out == data == declared
