"""A cached frame is used only if it is exactly what this build would write for its segments:
compress.copy_checked and archive.SegmentCheck on their own, without a build."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.bundleformat import archive, compress
from tests.bundlefiles import joined


def _blob(data: bytes) -> archive.Segment:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return archive.blob_segment(digest, len(data), lambda: io.BytesIO(data), True)


def _meta(data: bytes) -> archive.Segment:
    return archive.Segment("metadata x", len(data), True, lambda: iter((data,)), head=data)


def _frame(group: compress.FrameGroup) -> bytes:
    out = io.BytesIO()
    compress.compress_frame(group.segments, group.level, out, size=group.size_hint)
    return out.getvalue()


def _copy(frame: bytes, group: compress.FrameGroup) -> tuple[bool, bytes, list]:
    out, heard = io.BytesIO(), []
    ok = compress.copy_checked(io.BytesIO(frame), out, group,
                               lambda at, data: heard.append((at, bytes(data))), 7)
    return ok, out.getvalue(), heard


GROUP = compress.FrameGroup((_meta(b"{}" * 300), _blob(os.urandom(3000)), _blob(b"")), 3)


def test_the_frame_this_build_writes_is_used_and_copied_whole():
    frame = _frame(GROUP)
    ok, copied, heard = _copy(frame, GROUP)
    assert ok and copied == frame
    # what it decodes to is heard in order, from the offset given
    assert b"".join(d for _, d in heard) == joined(GROUP.segments)
    assert [at for at, _ in heard][0] == 7
    assert all(a + len(d) == b for (a, d), (b, _) in zip(heard, heard[1:], strict=False))


@pytest.mark.parametrize("change", [
    "one byte of the content", "the checksum", "bytes after the frame", "a second frame",
    "a skippable frame before", "cut short", "an empty block",
    "no checksum", "a content size in the header", "another window", "padded past the bound",
])
def test_anything_but_that_frame_is_refused(change):
    frame = _frame(GROUP)
    if change == "one byte of the content":
        other = GROUP.segments[1]
        data = bytearray(joined([other]))
        data[600] ^= 1
        bad = compress.FrameGroup((GROUP.segments[0], _meta(bytes(data)), GROUP.segments[2]), 3)
        frame = _frame(compress.FrameGroup(bad.segments, 3))
        assert frame[:6] == compress.frame_header(GROUP)
    elif change == "the checksum":
        frame = frame[:-1] + bytes([frame[-1] ^ 1])
    elif change == "bytes after the frame":
        frame += b"\0"
    elif change == "a second frame":
        frame += zstandard.ZstdCompressor().compress(b"")
    elif change == "a skippable frame before":
        frame = b"\x50\x2a\x4d\x18" + bytes(4) + frame
    elif change == "cut short":
        frame = frame[:-3]
    elif change == "an empty block":
        frame = frame[:6] + bytes(3) + frame[6:]
    elif change == "no checksum":
        frame = zstandard.ZstdCompressor(write_checksum=False).compress(joined(GROUP.segments))
    elif change == "a content size in the header":
        frame = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True
                                         ).compress(joined(GROUP.segments))
    elif change == "another window":
        frame = frame[:5] + bytes([frame[5] + 8]) + frame[6:]
    elif change == "padded past the bound":
        frame = frame[:6] + bytes(3) * GROUP.size + frame[6:]
    ok, _, heard = _copy(frame, GROUP)
    assert not ok
    # whatever was heard matched what the segments hold, as far as it went
    assert joined(GROUP.segments).startswith(b"".join(d for _, d in heard))


def test_another_encoding_of_the_right_content_is_used(tmp_path):
    # As docs/security.md says: what a frame decodes to is proved, how it is encoded is not
    # (that would be compressing again); --no-cache gives the reference bytes.
    other = _frame(compress.FrameGroup(GROUP.segments, 19))
    assert other != _frame(GROUP) and _copy(other, GROUP)[0]


def test_the_frame_may_start_anywhere_in_its_file():
    # As in the cache, where a line of magic comes first: the frame is the rest of the file.
    frame, prefix = _frame(GROUP), b"bundler-frame-2\n"
    src, out = io.BytesIO(prefix + frame), io.BytesIO()
    src.seek(len(prefix))
    assert compress.copy_checked(src, out, GROUP, None, 0) and out.getvalue() == frame
    src = io.BytesIO(prefix + frame[:-1])
    src.seek(len(prefix))
    assert not compress.copy_checked(src, io.BytesIO(), GROUP, None, 0)
    # the bound is the frame's, whatever comes before it: an incompressible frame, near it
    group = compress.FrameGroup((_blob(os.urandom(3000)),), 3)
    frame = _frame(group)
    src = io.BytesIO(bytes(4096) + frame)
    src.seek(4096)
    assert compress.copy_checked(src, io.BytesIO(), group, None, 0)


def test_a_frame_of_part_of_the_segments_is_refused():
    # A streamed group's header does not depend on its size: only the content tells.
    group = compress.FrameGroup(GROUP.segments, 3, streamed=True)
    out = io.BytesIO()
    compress.compress_frame(iter(GROUP.segments[:2]), 3, out)
    assert out.getvalue()[:6] == compress.frame_header(group)
    assert not _copy(out.getvalue(), group)[0]
    whole = io.BytesIO()
    compress.compress_frame(iter(GROUP.segments), 3, whole)
    assert _copy(whole.getvalue(), group)[0]


def test_the_bound_is_zstds_and_holds_every_frame_we_write():
    cffi = pytest.importorskip("zstandard.backend_cffi")
    for size in (0, 1, 100, 70_000, (128 << 10) - 1, 128 << 10, (128 << 10) + 1, 5 << 20):
        # ZSTD_COMPRESSBOUND, plus what a frame adds around its blocks
        assert compress.compress_bound(size) == cffi.lib.ZSTD_compressBound(size) + 32
    for size in (1, 1000, 200_000, 3 << 20):
        for level in (1, 16):
            group = compress.FrameGroup((_blob(os.urandom(size)),), level)
            assert len(_frame(group)) <= compress.compress_bound(group.size)


def test_a_frame_for_other_segments_is_refused():
    other = compress.FrameGroup((_meta(b"[]" * 300), *GROUP.segments[1:]), 3)
    assert not _copy(_frame(other), GROUP)[0]


def test_the_header_predicted_is_the_one_written():
    for size in (1, 5000, 200_000, 3 << 20):
        group = compress.FrameGroup((_blob(os.urandom(size)),), 16)
        assert _frame(group)[:6] == compress.frame_header(group)
    streamed = compress.FrameGroup((_blob(os.urandom(1000)),), 16, streamed=True)
    out = io.BytesIO()
    compress.compress_frame(iter(streamed.segments), 16, out)
    assert out.getvalue()[:6] == compress.frame_header(streamed)


def test_segment_check_takes_any_pieces_and_wants_them_all():
    segments = GROUP.segments
    plain = joined(segments)
    for step in (1, 7, 512, len(plain)):
        check = archive.SegmentCheck(segments)
        assert all(check.feed(plain[i:i + step]) for i in range(0, len(plain), step))
        assert check.complete()
    short = archive.SegmentCheck(segments)
    assert short.feed(plain[:-1]) and not short.complete()
    long = archive.SegmentCheck(segments)
    assert not long.feed(plain + b"\0")
    assert not archive.SegmentCheck(segments).feed(b"x" + plain[1:])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_segment_check_refuses_any_byte_changed(where, xor):
    plain = bytearray(joined(GROUP.segments))
    plain[where % len(plain)] ^= xor
    check = archive.SegmentCheck(GROUP.segments)
    assert not (check.feed(bytes(plain)) and check.complete())


def test_an_empty_blob_is_checked_against_its_digest_too():
    empty = archive.blob_segment("sha256:" + "0" * 64, 0, lambda: io.BytesIO(b""), True)
    check = archive.SegmentCheck([empty])
    assert not (check.feed(joined([empty])) and check.complete())
    right = _blob(b"")
    check = archive.SegmentCheck([right])
    assert check.feed(joined([right])) and check.complete()


def test_a_segment_with_bytes_it_cannot_check_is_a_programming_error():
    odd = archive.Segment("x", 10, True, lambda: iter((bytes(10),)), head=b"ab")
    with pytest.raises(ValueError, match="bytes beyond its head but no digest"):
        archive.SegmentCheck([odd])
