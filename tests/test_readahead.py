"""readahead: chunks in order, the producer's error where it happened, bounded, stoppable."""

from __future__ import annotations

import io
import threading
import time

import pytest
import zstandard

from bundler.readahead import Ahead, AheadReader
from tests.streams import Recording


def test_chunks_in_order_then_none_for_good():
    ahead = Ahead(iter([b"a", b"b", b"c"]), "t")
    assert [ahead.next() for _ in range(5)] == [b"a", b"b", b"c", None, None]


def test_the_producers_error_comes_after_what_it_produced():
    def chunks():
        yield b"one"
        raise ValueError("broken at two")

    ahead = Ahead(chunks(), "t")
    assert ahead.next() == b"one"
    with pytest.raises(ValueError, match="broken at two"):
        ahead.next()
    # and again, not a wait for ever: the producer is gone (verify hung on a bit flip so)
    assert "broken at two" in _raised_within(5, ahead.next)
    reader = AheadReader(_Broken(), "t", depth=1)
    for _ in range(3):
        assert "bad sector" in _raised_within(5, lambda: reader.read(10))
    reader.stop()


class _Broken(io.RawIOBase):
    def read(self, n=-1):
        raise OSError("bad sector")


def _raised_within(seconds: float, call) -> str:
    """What `call` raised, on a thread of its own; fails (not hangs) if it blocks."""
    raised = []

    def run():
        try:
            call()
            raised.append("(nothing raised)")
        except Exception as e:  # noqa: BLE001 - the test looks at it
            raised.append(str(e))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert raised, f"blocked for {seconds} s"
    return raised[0]


def test_bounded_and_stoppable():
    produced = []

    def endless():
        while True:
            produced.append(1)
            yield b"x"

    ahead = Ahead(endless(), "t", depth=2)
    time.sleep(0.3)
    assert len(produced) <= 4  # the queue holds 2, one in hand, one being put
    ahead.stop(wait=True)
    assert not any(t.name == "t" and t.is_alive() for t in threading.enumerate())


def test_reader_gives_the_bytes_in_any_read_sizes():
    data = bytes(range(256)) * 40_000  # several CHUNKs
    reader = AheadReader(io.BytesIO(data), "t")
    out, sizes = [], [1, 7, 4096, 1 << 20, 3]
    i = 0
    while chunk := reader.read(sizes[i % len(sizes)]):
        assert len(chunk) <= sizes[i % len(sizes)]
        out.append(chunk)
        i += 1
    assert b"".join(out) == data
    assert reader.read() == b""
    reader.stop()


def test_reader_asks_for_its_chunk_size_and_holds_few_of_them():
    """verify's memory depends on it: the pieces in flight are what it costs above zstd's
    window."""
    data = bytes(range(256)) * 4096  # 1 MiB
    raw = Recording(data)
    asked = raw.asked
    reader = AheadReader(raw, "t", depth=1, chunk=64 << 10)
    time.sleep(0.2)
    assert len(asked) <= 3, asked  # one queued, one being put, none taken yet
    assert reader.read(1 << 20) == data[: 64 << 10]  # one chunk at a time
    rest = b"".join(iter(reader.read, b""))
    assert data[64 << 10:] == rest
    assert set(asked) == {64 << 10}
    reader.stop()


def test_read_ahead_gives_the_stream_back_stopped():
    import threading
    import time

    class Slow:
        def __init__(self):
            self.f = io.BytesIO(bytes(range(256)) * 200_000)
            self.reading = threading.Event()

        def read(self, n):
            self.reading.set()
            time.sleep(0.05)
            return self.f.read(n)

    src = Slow()
    ahead = AheadReader(src, "t")
    assert ahead.read(10) == bytes(range(10))
    assert ahead.read(300)[:3] == bytes([10, 11, 12])
    src.reading.clear()
    assert src.reading.wait(5)  # it is reading ahead right now
    ahead.stop()
    here = src.f.tell()
    time.sleep(0.2)
    assert src.f.tell() == here  # nothing reads the stream after stop() returned


def test_read_ahead_raises_the_error_where_it_happened():
    class Failing:
        def __init__(self):
            self.n = 0

        def read(self, n):
            self.n += 1
            if self.n == 3:
                raise zstandard.ZstdError("broken frame")
            return b"x" * 1000

    ahead = AheadReader(Failing(), "t")
    assert ahead.read(2000) == b"x" * 1000 and ahead.read(2000) == b"x" * 1000
    with pytest.raises(zstandard.ZstdError, match="broken frame"):
        ahead.read(10)
    ahead.stop()
