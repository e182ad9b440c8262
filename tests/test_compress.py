import io
import os
import random

import pytest
import zstandard

from bundler.bundleformat import compress
from bundler.digest import HashingWriter
from bundler.errors import InputError
from tests.bundlefiles import zst

DATA = random.Random(1).randbytes(300_000) * 4


def _compress(data, **params):
    p = zstandard.ZstdCompressionParameters.from_level(3, **params)
    out = io.BytesIO()
    # Streamed with no size up front, as a bundle is: the header then states a window.
    with zstandard.ZstdCompressor(compression_params=p).stream_writer(out, closefd=False) as w:
        w.write(data)
    return out.getvalue()


def test_window_is_25_whatever_the_level():
    for level in (1, 16, 19, 22):
        frames = list(compress.frames(io.BytesIO(zst(DATA, level))))
        assert len(frames) == 1 and frames[0].window_size == 1 << 25, level


def _text(size):
    r = random.Random(3)
    words = [bytes(r.choices(b"abcdefghijklmnop", k=r.randint(2, 9))) for _ in range(2000)]
    return b" ".join(r.choices(words, k=size // 5))[:size]


def test_output_does_not_depend_on_core_count(monkeypatch):
    # Level 1 jobs are 2 MiB: this input is three of them, so the workers really split it.
    data = _text(6 << 20)
    outputs = {}
    for cores in (0, 1, 2, 8):  # 0: zstd's single-threaded mode, which bundler never uses
        monkeypatch.setattr(compress, "usable_cpus", lambda cores=cores: cores)
        outputs[cores] = zst(data, level=1)
    assert outputs[1] == outputs[2] == outputs[8]
    assert outputs[0] != outputs[1]  # the input is one where the job split shows


@pytest.mark.parametrize("files, expected", [
    ({}, None),  # no cgroup files: the affinity mask decides
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs of quota: two workers
    ({"cpu.max": "100000 100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
    ({"cpu.max": "garbage\n"}, None),
])
def test_usable_cpus_follows_cgroup_quota(tmp_path, monkeypatch, files, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert compress.usable_cpus(tmp_path) == (64 if expected is None else expected)


def test_usable_cpus_is_the_affinity_mask_not_the_host_count(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})  # taskset -c 0-2
    assert compress.usable_cpus(tmp_path) == 3


def test_frames_reads_windows_of_concatenated_and_skippable_frames():
    skippable = (0x184D2A5A).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    tiny = zstandard.ZstdCompressor().compress(b"tiny")
    stream = _compress(DATA, window_log=27) + skippable + tiny
    frames = list(compress.frames(io.BytesIO(stream)))
    assert [f.skippable for f in frames] == [False, True, False]
    assert frames[0].window_size == 1 << 27 > compress.MAX_WINDOW
    assert frames[2].window_size == 4  # single-segment: the window is the content size


@pytest.mark.parametrize("cut", [1, 5, 100, -5, -1])
def test_truncation_is_a_frame_error(cut):
    data = zst(DATA, 16)
    with pytest.raises(compress.FrameError, match="truncated"):
        list(compress.frames(io.BytesIO(data[:cut])))


def test_garbage_is_a_frame_error():
    with pytest.raises(compress.FrameError, match="no zstd frame at byte 0"):
        list(compress.frames(io.BytesIO(b"not zstd at all")))


def test_level_bounds():
    with pytest.raises(InputError, match="--level 23"):
        compress.check_level(23)


class _Seg:
    def __init__(self, data: bytes, key: str = "k"):
        self.data, self.size, self.key = data, len(data), key

    def chunks(self):
        yield self.data


def _frame(data: bytes, level: int, size) -> bytes:
    out = io.BytesIO()
    compress.compress_frame([_Seg(data)], level, out, size=size)
    return out.getvalue()


def test_small_frames_get_a_window_their_size_single_threaded(monkeypatch):
    # A level-16, 2^25-window, multi-threaded context cost 50-90 ms per frame.
    data = _text(40_000)
    outputs = set()
    for cores in (1, 2, 8):
        monkeypatch.setattr(compress, "usable_cpus", lambda cores=cores: cores)
        frame = _frame(data, 16, len(data))
        (header,) = compress.frames(io.BytesIO(frame))
        assert header.window_size == 1 << 16  # 40,000 bytes fit in 2^16
        assert zstandard.ZstdDecompressor().decompress(frame, max_output_size=len(data)) == data
        outputs.add(frame)
    assert len(outputs) == 1
    params = compress.frame_params(16, len(data))
    assert params.threads == 0 and params.window_log == 16
    # Unknown size: the full window, multi-threaded, as before.
    assert compress.frame_params(16, None).window_log == 25
    assert compress.frame_params(16, None).threads >= 1


def test_the_size_threshold_is_one_job_and_fixed(monkeypatch):
    for level in (1, 3, 16, 19):
        limit = compress.single_thread_limit(level)
        assert limit <= compress.MAX_JOB_SIZE
        below, at = compress.frame_params(level, limit - 1), compress.frame_params(level, limit)
        assert below.threads == 0 and below.window_log <= 25
        assert at.threads >= 1 and at.window_log == 25
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
        assert compress.single_thread_limit(level) == limit  # not the machine's
        monkeypatch.undo()
    assert compress.small_window_log(0) == compress.small_window_log(1000) == 10
    assert compress.small_window_log(1025) == 11
    assert compress.small_window_log(1 << 30) == 25


def test_frame_key_follows_the_parameters():
    small = compress.FrameGroup((_Seg(b"x" * 5000),), 16)
    keys = {small.key, compress.FrameGroup(small.segments, 16, streamed=True).key,
            compress.FrameGroup(small.segments, 15).key}
    assert len(keys) == 3  # same contents, other parameters: other bytes, other key
    # Only the window differs (both single-threaded): the key still tells them apart.
    assert compress.FrameGroup((_Seg(b"x" * 50_000),), 16).key != small.key
    assert small.key == compress.FrameGroup((_Seg(b"y" * 5000),), 16).key  # same segment key
    assert _frame(b"x" * 5000, 16, 5000) != _frame(b"x" * 5000, 16, None)


def test_group_frames_decode_and_streamed_groups_keep_the_big_window(tmp_path):
    data = _text(300_000)
    for streamed, window in ((False, 1 << 19), (True, 1 << 25)):
        out = io.BytesIO()
        compress.write_frames([compress.FrameGroup((_Seg(data),), 16, streamed=streamed)],
                              HashingWriter(out))
        (header,) = compress.frames(io.BytesIO(out.getvalue()))
        assert header.window_size == window
        assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out.getvalue())).read() \
            == data


MAGIC = (0xFD2FB528).to_bytes(4, "little")


def _block(payload: bytes, kind: int = 0, last: bool = True, size: int | None = None) -> bytes:
    """A block header (3 bytes, little-endian: last bit, type, size) and its payload."""
    size = len(payload) if size is None else size
    return (int(last) | kind << 1 | size << 3).to_bytes(3, "little") + payload


def _crafted(fhd: int, wd: int | None = None, dict_id: bytes = b"", fcs: bytes = b"",
             blocks: bytes = b"", checksum: bool = False) -> bytes:
    head = MAGIC + bytes([fhd]) + (bytes([wd]) if wd is not None else b"") + dict_id + fcs
    return head + (blocks or _block(b"x")) + (b"\0" * 4 if checksum else b"")


@pytest.mark.parametrize("exponent", [0, 14, 15, 16, 21])  # 21: libzstd's most, 2^31
def test_frames_reads_the_window_descriptors_mantissa(exponent):
    # Window = 2^(10 + exponent) + mantissa eighths of it (RFC 8878, 3.1.1.1.2); encoders write
    # mantissa 0, but a crafted header need not, and 2^25 + 2^22 is past K3s's limit.
    for mantissa in range(8):
        data = _crafted(0x00, wd=exponent << 3 | mantissa)
        base = 1 << (10 + exponent)
        want = base + base // 8 * mantissa
        assert want == zstandard.get_frame_parameters(data).window_size  # libzstd agrees
        assert list(compress.frames(io.BytesIO(data))) == [compress.Frame(0, want)], mantissa


# (frame header descriptor, window descriptor, dictionary id, frame content size)
HEADERS = [
    (0x20, None, b"", b"\x07"),  # single segment, 1-byte size: the window is the size
    (0x60, None, b"", b"\x07\x01"),  # 2-byte size: 256 more than it says
    (0xA0, None, b"", b"\x07\x01\x02\x00"),
    (0xE0, None, b"", b"\x07\x01\x02\x00\x00\x00\x00\x00"),
    (0x21, None, b"\x05", b"\x09"),  # dictionary ids of 1, 2 and 4 bytes before the size
    (0x62, None, b"\x05\x06", b"\x09\x01"),
    (0xA3, None, b"\x05\x06\x07\x08", b"\x09\x01\x02\x03"),
    (0x01, 0x58, b"\x05", b""),  # not single segment: a window descriptor, no size
    (0x42, 0x7B, b"\x05\x06", b"\x09\x01"),  # ...and a size, which is not the window then
    (0x80, 0x7B, b"", b"\x09\x01\x02\x03"),
    (0xC3, 0x7B, b"\x05\x06\x07\x08", b"\x09\x01\x02\x03\x04\x05\x06\x07"),
]


@pytest.mark.parametrize(("fhd", "wd", "dict_id", "fcs"), HEADERS)
@pytest.mark.parametrize("checksum", [False, True])
def test_frames_walks_every_header_layout(fhd, wd, dict_id, fcs, checksum):
    """Each field's length is read from the descriptor: the next frame starts where libzstd
    says this one ends, with the window libzstd reads."""
    fhd |= 0x04 if checksum else 0
    first = _crafted(fhd, wd, dict_id, fcs, checksum=checksum)
    params = zstandard.get_frame_parameters(first)
    assert params.has_checksum == checksum and params.dict_id == int.from_bytes(dict_id,
                                                                                 "little")
    second = _crafted(0x20, fcs=b"\x01")
    stream = first + second + first
    assert list(compress.frames(io.BytesIO(stream))) == [
        compress.Frame(0, params.window_size), compress.Frame(len(first), 1),
        compress.Frame(len(first) + len(second), params.window_size)]


def test_frames_skips_blocks_by_type():
    # Raw and compressed blocks carry `size` bytes, an RLE block one byte repeated `size`
    # times; only the last-block bit ends the frame.
    blocks = (_block(b"abc", last=False) + _block(b"z", kind=1, size=1000, last=False)
              + _block(b"\0" * 5, kind=2, last=False) + _block(b"", last=False)
              + _block(b"q", kind=1, size=7))
    data = _crafted(0x00, wd=0, blocks=blocks)
    tail = _crafted(0x20, fcs=b"\x02")
    # (the empty raw block before the last is counted: a cached frame with one is not used)
    assert list(compress.frames(io.BytesIO(data + tail))) == [
        compress.Frame(0, 1024, empty_blocks=1), compress.Frame(len(data), 2)]


def test_frames_refuses_reserved_bits_and_block_types():
    with pytest.raises(compress.FrameError, match="^reserved bit set in frame header at byte "
                                                  "4$"):
        list(compress.frames(io.BytesIO(_crafted(0x08, wd=0))))
    good = _crafted(0x20, fcs=b"\x01")
    bad = _crafted(0x00, wd=0, blocks=_block(b"ab", last=False) + _block(b"", kind=3))
    with pytest.raises(compress.FrameError, match=f"^reserved block type at byte "
                                                  f"{len(good) + 6 + 5}$"):
        list(compress.frames(io.BytesIO(good + bad)))


@pytest.mark.parametrize("magic", [0x184D2A50, 0x184D2A57, 0x184D2A5F])
def test_frames_skips_every_skippable_magic(magic):
    skippable = magic.to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    tail = _crafted(0x20, fcs=b"\x03")
    assert list(compress.frames(io.BytesIO(skippable + tail))) == [
        compress.Frame(0, 0, skippable=True), compress.Frame(13, 3)]


@pytest.mark.parametrize("magic", [0x184D2A4F, 0x184D2A60, 0x184D2B50, 0xFD2FB527])
def test_frames_refuses_magics_next_to_the_real_ones(magic):
    data = _crafted(0x20, fcs=b"\x01")
    with pytest.raises(compress.FrameError, match=f"^no zstd frame at byte {len(data)}$"):
        list(compress.frames(io.BytesIO(data + magic.to_bytes(4, "little") + b"\0" * 20)))


@pytest.mark.parametrize(("cut", "where"), [
    (2, "truncated frame header at byte 0"),
    (3, "truncated frame header at byte 0"),  # a FrameError still, not struct's error
    (4, "truncated zstd stream at byte 4"),  # no descriptor
    (5, "truncated zstd stream at byte 5"),  # no window descriptor
    (7, "truncated zstd stream at byte 7"),  # half the 2-byte dictionary id
    (9, "truncated zstd stream at byte 9"),  # no size
    (11, "truncated zstd stream at byte 11"),  # a third of a block header
    (14, "truncated zstd stream at byte 14"),  # one of three payload bytes
    (16, "truncated zstd stream at byte 16"),  # no checksum
    (18, "truncated zstd stream at byte 18"),  # half of it
])
def test_frames_names_the_byte_where_a_frame_is_cut(cut, where):
    data = _crafted(0x46, wd=0, dict_id=b"\x05\x06", fcs=b"\x01\x02", blocks=_block(b"abc"),
                    checksum=True)
    assert len(data) == 20
    with pytest.raises(compress.FrameError, match=f"^{where}$"):
        list(compress.frames(io.BytesIO(data[:cut])))


def test_a_skippable_frame_cut_short_is_a_frame_error():
    data = (0x184D2A50).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"123"
    with pytest.raises(compress.FrameError, match="^truncated zstd stream at byte 11$"):
        list(compress.frames(io.BytesIO(data)))
    with pytest.raises(compress.FrameError, match="^truncated zstd stream at byte 6$"):
        list(compress.frames(io.BytesIO(data[:6])))  # half its size field


def _big_stream() -> bytes:
    """Frames whose skippable payload and blocks are past Seeking's 4096-byte read limit."""
    skippable = (0x184D2A50).to_bytes(4, "little") + (5000).to_bytes(4, "little") + b"s" * 5000
    blocks = _block(b"r" * 9000, last=False) + _block(b"z", kind=1, size=70000, last=False) \
        + _block(b"c" * 4097)
    return skippable + _crafted(0x04, wd=0x10, blocks=blocks, checksum=True) + \
        _compress(DATA[:50_000], window_log=20)


def test_seeking_walks_a_file_as_reading_it_does(tmp_path):
    data = _big_stream()
    path = tmp_path / "s.zst"
    path.write_bytes(data)
    read = list(compress.frames(io.BytesIO(data)))
    assert [f.offset for f in read] == [0, 5008, 5008 + 6 + 9003 + 4 + 4100 + 4]
    with open(path, "rb") as f:
        assert list(compress.frames(compress.Seeking(f))) == read
    # Cut anywhere, seeking names the same byte as reading does.
    for cut in (5007, 5008 + 3000, 5008 + 6 + 9003 + 2, 5008 + 6 + 9003 + 4 + 4000,
                len(data) - 10_000, len(data) - 3):
        path.write_bytes(data[:cut])
        with pytest.raises(compress.FrameError) as read_error:
            list(compress.frames(io.BytesIO(data[:cut])))
        with open(path, "rb") as f, pytest.raises(compress.FrameError) as seek_error:
            list(compress.frames(compress.Seeking(f)))
        assert str(seek_error.value) == str(read_error.value), cut


def test_seeking_read_skips_big_reads_and_stops_at_the_end(tmp_path):
    path = tmp_path / "f"
    data = bytes(range(256)) * 40  # 10240 bytes
    path.write_bytes(data)
    with open(path, "rb") as f:
        s = compress.Seeking(f)
        assert s.read(4) == b"\0\1\2\3"  # small: read
        assert s.read(5000) == b"\0" * 5000 and f.tell() == 5004  # big: skipped, not read
        assert s.read(4096) == data[5004:9100]  # 4096 is still read
        assert f.tell() == 9100
        assert s.read(8000) == b"\0" * 1140 and f.tell() == 10240  # short at the end
        assert s.read(8000) == b"" and s.read(4) == b""


@pytest.mark.parametrize("tail", [b"\x28", b"\x28\xb5", b"\x28\xb5\x2f"])
def test_a_frame_magic_cut_after_whole_frames_names_its_byte(tail):
    data = _crafted(0x20, fcs=b"\x01")
    with pytest.raises(compress.FrameError, match=f"^truncated frame header at byte "
                                                  f"{len(data)}$"):
        list(compress.frames(io.BytesIO(data + tail)))
