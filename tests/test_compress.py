import io
import os
import random

import pytest
import zstandard

from bundler import compress
from bundler.digest import HashingWriter
from bundler.errors import InputError

DATA = random.Random(1).randbytes(300_000) * 4


def _compress(data, **params):
    p = zstandard.ZstdCompressionParameters.from_level(3, **params)
    out = io.BytesIO()
    # Streamed with no size up front, as a bundle is: the header then states a window.
    with zstandard.ZstdCompressor(compression_params=p).stream_writer(out, closefd=False) as w:
        w.write(data)
    return out.getvalue()


def _ours(data, level=16):
    out = io.BytesIO()
    with compress.compressor(level).stream_writer(out, closefd=False) as w:
        w.write(data)
    return out.getvalue()


def test_window_is_25_whatever_the_level():
    for level in (1, 16, 19, 22):
        frames = list(compress.frames(io.BytesIO(_ours(DATA, level))))
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
        outputs[cores] = _ours(data, level=1)
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
    data = _ours(DATA)
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
    # Issue 12: a level-16, 2^25-window, multi-threaded context cost 50-90 ms per frame.
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
