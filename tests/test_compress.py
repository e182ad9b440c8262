import io
import os
import random

import pytest
import zstandard

from bundler import compress
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


def test_output_does_not_depend_on_core_count(monkeypatch):
    outputs = set()
    for cores in (1, 2, 8):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        outputs.add(_ours(DATA))
    assert len(outputs) == 1


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
