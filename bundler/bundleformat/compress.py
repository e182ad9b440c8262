"""zstd parameters and frames: the one place that knows K3s's decoder limit.

K3s decodes bundles with klauspost/compress and MaxDecoderMemory = 1<<25 (rancher/wharfie
tarfile.go; k3s issue 2941): a frame whose window exceeds 2^25 bytes fails to import. Every
compressor is made here, with the window log fixed at 25 whatever the level.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from bundler.digest import CHUNK, HashingWriter
from bundler.errors import InputError

WINDOW_LOG = 25
MAX_WINDOW = 1 << WINDOW_LOG
# zstd's multi-threaded jobs and their overlap: constants, never derived from the machine, so
# the bytes do not depend on it. Memory grows with the job size and a build must stay within
# 1.2x of the zstd CLI's memory on the same work; a longer overlap costs CPU more than it saves
# size. The measurements behind both are in docs/benchmark.md ("The compressor's parameters").
MAX_JOB_SIZE = 12 << 20
OVERLAP_LOG = 6  # overlap = window >> (9 - 6); zstd's default for levels below lazy2
DEFAULT_LEVEL = 16
MIN_LEVEL, MAX_LEVEL = 1, 22

# K3s (rancher/wharfie pkg/tarfile) picks the decompressor by the file name's suffix,
# case-insensitively: our zstd bytes under .tar.gz or .tar would be read as gzip or plain tar.
ZSTD_SUFFIXES = (".tar.zst", ".tzst")

_FRAME_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK, _SKIPPABLE_MAGIC = 0xFFFFFFF0, 0x184D2A50


def check_level(level: int) -> int:
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise InputError(f"--level {level}: zstd levels run from {MIN_LEVEL} to {MAX_LEVEL}")
    return level


def compressor(level: int = DEFAULT_LEVEL, size: int | None = None) -> zstandard.ZstdCompressor:
    """A compressor whose output does not depend on the number of cores.

    `size` is the exact size of the frame's content when it is known in advance; None for a
    frame streamed from an iterator. See frame_params for what each gets.
    """
    return zstandard.ZstdCompressor(compression_params=frame_params(level, size))


def frame_params(level: int, size: int | None) -> zstandard.ZstdCompressionParameters:
    """zstd's parameters for a frame of `size` bytes (None: not known in advance).

    A frame smaller than one multi-threaded job is compressed single-threaded, with the
    parameters zstd itself picks for that level and size (ZSTD_getCParams: tables sized to
    the input) and a window just big enough for it. Workers would gain nothing on a frame that
    is one job, and setting up a level-16, 2^25-window, multi-threaded context cost 50-90 ms
    per frame, most of a many-image preserve build. Everything else is compressed
    multi-threaded with the full 2^25 window and long-distance matching; zstd's multi-threaded
    mode gives the same bytes for any worker count >= 1 (they differ only from single-threaded
    mode), so it always runs with at least one worker. Which of the two a frame gets depends
    only on the level and the size, never on the machine, so the bytes do not either.
    """
    check_level(level)
    if size is not None and size < single_thread_limit(level):
        return zstandard.ZstdCompressionParameters.from_level(
            level, source_size=max(size, 1), window_log=small_window_log(size),
            write_checksum=True, write_content_size=False)
    base = zstandard.ZstdCompressionParameters.from_level(level, window_log=WINDOW_LOG)
    return zstandard.ZstdCompressionParameters.from_level(
        level,
        window_log=WINDOW_LOG,
        enable_ldm=True,
        threads=usable_cpus(),
        job_size=_job_size(level, base),
        overlap_log=OVERLAP_LOG,
        write_checksum=True,
        write_content_size=False,
    )


def single_thread_limit(level: int) -> int:
    """Frames below this size (one multi-threaded job at `level`) are single-threaded."""
    base = zstandard.ZstdCompressionParameters.from_level(level, window_log=WINDOW_LOG)
    return _job_size(level, base)


def small_window_log(size: int) -> int:
    """The smallest window that holds all of `size` bytes (zstd's minimum is 2^10): a frame
    never refers further back than its own start, so a bigger window only costs memory."""
    return min(WINDOW_LOG, max(10, math.ceil(math.log2(max(size, 1)))))


def _job_size(level: int, base: zstandard.ZstdCompressionParameters) -> int:
    return min(_zstd_job_size(base.chain_log, base.strategy), MAX_JOB_SIZE)


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota.

    os.cpu_count() is the host's count; in a CI pod limited to 2 CPUs of a 64-core node, that
    many zstd workers would each take a level-16 context (tens of MiB) and only contend.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    for quota_file, period_file in (("cpu.max", None),  # cgroup v2: "<quota> <period>"
                                    ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            fields = (cgroup / quota_file).read_text().split()
            if period_file:
                fields.append((cgroup / period_file).read_text().strip())
            quota, period = int(fields[0]), int(fields[1])
        except (OSError, ValueError, IndexError):  # no such file, or "max": no quota
            continue
        if quota > 0 and period > 0:
            n = min(n, -(-quota // period))
    return max(1, n)


def _zstd_job_size(chain_log: int, strategy: int) -> int:
    """The job size zstd picks with long mode (ZSTDMT_computeTargetJobLog): fast levels keep
    their small jobs, only the big jobs of high levels are capped."""
    cycle_log = chain_log - (1 if strategy >= zstandard.STRATEGY_BTLAZY2 else 0)
    return 1 << max(21, cycle_log + 3)


class Segment(Protocol):
    """A run of bytes that is always the same for the same key (archive.Segment)."""

    key: str
    size: int

    def chunks(self) -> Iterator[bytes]: ...


# Bumped whenever the way a group is compressed changes (cached frames key).
_FRAME_FORMAT = "zstd-frame-v3"


@dataclass(frozen=True)
class FrameGroup:
    """Segments compressed together as one zstd frame, at one level. A `streamed` group is
    compressed while its segments are still being produced (the compact bundle's body), so
    its size is not known in advance and it gets the parameters of a frame of unknown size,
    whatever its size turns out to be."""

    segments: tuple[Segment, ...]
    level: int
    streamed: bool = False

    @property
    def key(self) -> str:
        """What determines the frame's bytes: our parameters, zstd's version, the contents."""
        params = frame_params(self.level, self.size_hint)
        doc = {"format": _FRAME_FORMAT, "zstd": zstandard.ZSTD_VERSION, "level": self.level,
               "windowLog": params.window_log, "threaded": params.threads > 0,
               "ldm": bool(params.enable_ldm), "maxJobSize": MAX_JOB_SIZE,
               "overlapLog": OVERLAP_LOG, "segments": [s.key for s in self.segments]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def size_hint(self) -> int | None:
        """The size the parameters are chosen for: None when streamed."""
        return None if self.streamed else self.size


# Where the plain tar a bundle's frames decode to goes, piece by piece: (offset in the tar,
# bytes). Build's self-check (verify.WrittenCheck) reads it.
PlainSink = Callable[[int, bytes], None]


def write_frames(groups: Sequence[FrameGroup], out: HashingWriter, cache=None,
                 on_bytes: Callable[[int], object] | None = None,
                 plain: PlainSink | None = None, start: int = 0) -> None:
    """Compress each group into one frame on `out`; concatenated frames are one zstd stream.

    With a cache (cache.FrameCache), a frame compressed before is copied instead, and a new
    one is kept for next time. A cache is untrusted input: a cached frame is used only if it
    is the frame header this group gets and decompresses to exactly the group's segments
    (copy_checked); any other entry is dropped, its bytes taken back out of `out`, and the
    group compressed as if nothing was cached. `plain` hears what every frame written
    decompresses to, the tar's bytes from `start` on: decompressed from the bytes written,
    whether compressed now or copied.
    """
    for group in groups:
        cached = cache.open(group.key) if cache else None
        if cached is not None:
            mark = out.mark()
            with cached:
                reused = copy_checked(cached, out, group, plain, start)
            if reused:
                if on_bytes:
                    on_bytes(group.size)
                start += group.size
                continue
            import logging  # only build writes frames; verify reads this module too

            logging.getLogger(__name__).warning(
                "cached frame %s is not what its segments compress to; dropped it",
                group.key[:16])
            cache.drop(group.key)
            out.rewind(mark)
        tee = plain_tee(out, plain, start) if plain else None
        _compress_group(group, tee or out, cache, on_bytes)
        if tee:
            tee.close()
        start += group.size


def frame_header(group: FrameGroup) -> bytes:
    """The header every frame of `group` starts with: magic, a descriptor with only the
    checksum flag (no content size, no dictionary), and the window frame_params chooses."""
    window_log = frame_params(group.level, group.size_hint).window_log
    return struct.pack("<IBB", _FRAME_MAGIC, 0x04, (window_log - 10) << 3)


def copy_checked(src: BinaryIO, out: BinaryIO, group: FrameGroup,
                 plain: PlainSink | None, start: int) -> bool:
    """Copy the frame that fills the rest of `src` to `out`, and say whether it is one frame
    with `group`'s header that decompresses (checksum included) to exactly its segments
    (archive.SegmentCheck). The bytes checked are the bytes copied, read once; when False,
    what was written to `out` must be taken back. Memory is bounded by the window, whatever
    the frame holds. `plain` hears the bytes that matched so far, from tar offset `start`."""
    from bundler.bundleformat.archive import SegmentCheck

    at = src.tell()
    if src.seek(0, os.SEEK_END) - at > compress_bound(group.size):
        return False  # not read at all: an encoding padded out to bloat what build signs
    src.seek(at)
    try:
        walked = list(itertools.islice(frames(Seeking(src)), 2))
    except FrameError:
        return False
    end = src.tell()
    if len(walked) != 1 or walked[0].skippable or walked[0].empty_blocks:
        return False
    src.seek(at)
    header = frame_header(group)
    if src.read(len(header)) != header:
        return False
    src.seek(at)
    copied = _CopyingReader(src, end - at, out)
    check = SegmentCheck(group.segments)
    reader = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_reader(
        copied, read_size=CHUNK, read_across_frames=False, closefd=False)
    try:
        while chunk := reader.read(CHUNK):
            if not check.feed(chunk):
                return False
            if plain:
                plain(start, chunk)
            start += len(chunk)
    except zstandard.ZstdError:
        return False
    return copied.drain() and check.complete()


def plain_tee(out: BinaryIO, plain: PlainSink, start: int) -> BinaryIO:
    """`out`, whose writes (one frame, as compressed) are also decompressed to `plain`, from
    tar offset `start`; call close() when the frame is done. A frame that does not decode
    raises zstandard.ZstdError from write()."""
    return _PlainTee(out, plain, start)


class _PlainTee:
    def __init__(self, out: BinaryIO, plain: PlainSink, start: int):
        self._out = out
        self._to = _PlainAt(plain, start)
        self._decoder = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_writer(
            self._to, write_size=CHUNK, closefd=False)

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._decoder.write(data)
        return len(data)

    def close(self) -> None:
        self._decoder.flush()


class _PlainAt:
    def __init__(self, plain: PlainSink, start: int):
        self._plain, self._at = plain, start

    def write(self, data: bytes) -> int:
        self._plain(self._at, data)
        self._at += len(data)
        return len(data)


def compress_bound(size: int) -> int:
    """The most any zstd frame of `size` bytes takes (ZSTD_COMPRESSBOUND in zstd.h), plus
    the frame's header, checksum and a last empty block a streaming compressor may end on."""
    margin = ((128 << 10) - size) >> 11 if size < 128 << 10 else 0
    return size + (size >> 8) + margin + 32


class _CopyingReader:
    """Reads at most `size` bytes of `src`, writing each byte read to `out`."""

    def __init__(self, src: BinaryIO, size: int, out: BinaryIO):
        self._src, self._left, self._out = src, size, out

    def read(self, n: int = CHUNK) -> bytes:
        data = self._src.read(min(n if n >= 0 else CHUNK, self._left))
        self._left -= len(data)
        self._out.write(data)
        return data

    def drain(self) -> bool:
        """Copy what the decompressor left of the frame; False if nothing was left over
        and the file ended early, or if bytes follow the frame's end."""
        extra = 0
        while data := self.read(CHUNK):
            extra += len(data)
        return self._left == 0 and extra == 0


def _compress_group(group: FrameGroup, out: BinaryIO, cache,
                    on_bytes: Callable[[int], object] | None) -> None:
    pending = cache.writer(group.key) if cache else None
    try:
        compress_frame(group.segments, group.level, _Both(out, pending) if pending else out,
                       on_bytes, size=group.size_hint)
        if pending:
            pending.commit()
    finally:
        if pending:
            pending.close()


# How often the bytes compressed so far are reported while a frame is being compressed.
PROGRESS_INTERVAL = 0.25


def compress_frame(segments: Iterable[Segment], level: int, out: BinaryIO,
                   on_bytes: Callable[[int], object] | None = None, size: int | None = None
                   ) -> None:
    """Compress the segments, in order (an iterator may still be producing them), as one
    frame onto `out`; on_bytes hears how many more bytes zstd has compressed, every
    PROGRESS_INTERVAL while it works, and of every byte by the end. `size`: the segments'
    total, when known in advance (it picks the parameters, frame_params). The frame decodes
    right whatever the size turns out to be (zstd never refers past its window); archive's
    reader fails a blob that is not its stated size before the frame is finished.

    The work runs on a thread of its own, so that a signal is handled at once:
    a write into zstd's multi-threaded compressor blocks until a worker takes the next job,
    seconds at level 16, and the main thread handles signals only between bytecodes. An
    interrupted frame is abandoned, not finished: closing it would compress all that is
    buffered, and freeing its context joins zstd's workers, each busy with a whole job (a
    Ctrl-C took 3-23 s either way). The abandoned thread keeps the context until the
    process exits. Progress comes from zstd's own count of what its workers consumed: the
    bytes handed in arrive a whole 12 MiB job at a time, every few seconds at level 16.
    """
    if size is not None and size < single_thread_limit(level):
        _compress_here(segments, level, out, on_bytes, size)
        return
    frame = _FrameThread(segments, level, out, size)
    frame.start()
    reported = 0
    try:
        while frame.is_alive():
            # A signal interrupts this wait (lock waits are interruptible on POSIX).
            frame.join(PROGRESS_INTERVAL)
            if on_bytes:
                done = frame.consumed()
                if done > reported:
                    on_bytes(done - reported)
                    reported = done
    except BaseException:
        frame.abandon()
        raise
    if frame.error is not None:
        error, frame.error = frame.error, None
        try:
            raise error
        finally:
            # No cycle through this frame: a caller that handles the error (the compact
            # bundle restarts its body) frees the compressor with it, without a gc pass.
            del error
    if on_bytes and frame.ingested > reported:
        on_bytes(frame.ingested - reported)


def _compress_here(segments: Iterable[Segment], level: int, out: BinaryIO,
                   on_bytes: Callable[[int], object] | None, size: int) -> None:
    """A frame below one job, on the calling thread: single-threaded zstd returns from each
    write once it has compressed that chunk, so a signal waits at most one chunk. A thread
    per frame cost a many-image build time and memory that grew with the image count (a
    thread start and a context in another glibc arena for each of 600 frames)."""
    writer = compressor(level, size).stream_writer(out, closefd=False)
    for segment in segments:
        for chunk in segment.chunks():
            writer.write(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    writer.close()


class _FrameThread(threading.Thread):
    def __init__(self, segments: Iterable[Segment], level: int, out: BinaryIO,
                 size: int | None):
        super().__init__(name="zstd-frame", daemon=True)
        self._segments = segments
        self._out = out
        self._compressor = compressor(level, size)
        self._abandoned = threading.Event()
        self._writing = False
        self.ingested = 0
        self.error: BaseException | None = None

    def consumed(self) -> int:
        """Bytes zstd's workers have compressed so far (at most what was handed in).

        Read from another thread while this one compresses: zstd's progress counters are
        plain reads and per-job mutexes, but its first call sets the context up (and may
        reallocate its job table), so nothing is asked before that call has returned.
        """
        if not self._writing or not self.is_alive():
            return 0
        return min(self._compressor.frame_progression()[1], self.ingested)

    def abandon(self) -> None:
        """Stop at the next chunk and never finish or free the compressor."""
        self._abandoned.set()

    def run(self) -> None:
        writer = None
        try:
            writer = self._compressor.stream_writer(self._out, closefd=False)
            for segment in self._segments:
                for chunk in segment.chunks():
                    if self._abandoned.is_set():
                        return
                    writer.write(chunk)
                    self.ingested += len(chunk)
                    self._writing = True
            writer.close()  # ends the frame; `out` stays open (closefd=False)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            self.error = e
        finally:
            if self._abandoned.is_set():
                # Holding the compressor here, forever: its last reference must not go while
                # the process lives on, or its release would wait for zstd's workers.
                threading.Event().wait()
            del writer


class _Both:
    """Writes to the bundle and to the frame being cached."""

    def __init__(self, out: BinaryIO, pending):
        self._out = out
        self._pending = pending

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._pending.write(data)
        return len(data)


@dataclass(frozen=True)
class Frame:
    """A zstd frame as its header describes it (offset in the file, window it needs)."""

    offset: int
    window_size: int
    skippable: bool = False
    # Blocks before the last that decode to nothing: valid, and never written by zstd, but
    # padding that changes a frame's bytes and not what it decodes to.
    empty_blocks: int = 0


class FrameError(Exception):
    """The stream is not a well-formed sequence of zstd frames."""


class Seeking:
    """A seekable file for frames(): block contents are skipped by seeking, not read."""

    def __init__(self, f: BinaryIO):
        self._f = f

    def read(self, n: int) -> bytes:
        if n > 4096:
            here = self._f.tell()
            end = self._f.seek(0, 2)
            self._f.seek(min(here + n, end))
            return b"\0" * (min(here + n, end) - here)
        return self._f.read(n)


def frames(f: BinaryIO) -> Iterator[Frame]:
    """Walk the frame and block headers of a zstd file without decompressing it.

    Raises FrameError on anything malformed or truncated, with the byte offset.
    """
    offset = 0
    while True:
        head = f.read(4)
        if not head:
            return
        if len(head) < 4:
            raise FrameError(f"truncated frame header at byte {offset}")
        (magic,) = struct.unpack("<I", head)
        if magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
            (size,) = struct.unpack("<I", _exact(f, 4, offset + 4))
            _skip(f, size, offset + 8)
            yield Frame(offset, 0, skippable=True)
            offset += 8 + size
            continue
        if magic != _FRAME_MAGIC:
            raise FrameError(f"no zstd frame at byte {offset}")
        length, window, checksum = _frame_header(f, offset + 4)
        start = offset
        offset, empty = _blocks(f, offset + 4 + length)
        if checksum:
            _skip(f, 4, offset)
            offset += 4
        yield Frame(start, window, empty_blocks=empty)


def frame_spans(f: BinaryIO, what: object, limit: int, *, skippable: bool = False
                ) -> list[tuple[int, int]]:
    """(offset, length) of each data frame of the file `f` (with `skippable`, of every frame:
    what rebuilds the file byte for byte needs those too); a frame ends where the next one or
    the file does. InputError naming `what` when the file is not frames, or has more than
    `limit` (skippable ones counted)."""
    starts: list[tuple[int, bool]] = []
    try:
        for frame in frames(Seeking(f)):
            if len(starts) == limit:
                raise InputError(f"{what}: more than {limit} zstd frames (skippable ones "
                                 "counted); not a bundle bundler wrote")
            starts.append((frame.offset, frame.skippable))
    except FrameError as e:
        raise InputError(f"{what}: zstd: {e}") from None
    ends = [offset for offset, _ in starts[1:]] + [os.fstat(f.fileno()).st_size]
    return [(offset, end - offset)
            for (offset, skipped), end in zip(starts, ends, strict=True)
            if skippable or not skipped]


class Window:
    """`length` bytes of a file from `offset`, as a stream: a zstd reader given it cannot
    read on past the frames it is meant for."""

    def __init__(self, fd: int, offset: int, length: int):
        self._fd, self._at, self._end = fd, offset, offset + length

    def read(self, n: int = -1) -> bytes:
        n = self._end - self._at if n < 0 else min(n, self._end - self._at)
        data = os.pread(self._fd, n, self._at) if n > 0 else b""
        self._at += len(data)
        return data


def _frame_header(f: BinaryIO, offset: int) -> tuple[int, int, bool]:
    """(header length, window size, has checksum) of the frame header at `offset`."""
    (descriptor,) = _exact(f, 1, offset)
    fcs_flag, single, dict_flag = descriptor >> 6, descriptor >> 5 & 1, descriptor & 3
    if descriptor >> 3 & 1:
        raise FrameError(f"reserved bit set in frame header at byte {offset}")
    window = 0
    length = 1
    if not single:
        (wd,) = _exact(f, 1, offset + length)
        length += 1
        base = 1 << (10 + (wd >> 3))
        window = base + (base >> 3) * (wd & 7)
    dict_len = (0, 1, 2, 4)[dict_flag]
    fcs_len = (1 if single else 0, 2, 4, 8)[fcs_flag]
    rest = _exact(f, dict_len + fcs_len, offset + length)
    length += dict_len + fcs_len
    if single:
        fcs = int.from_bytes(rest[dict_len:], "little") + (256 if fcs_len == 2 else 0)
        window = fcs
    return length, window, bool(descriptor >> 2 & 1)


def _blocks(f: BinaryIO, offset: int) -> tuple[int, int]:
    """Skip the blocks of one frame: the offset just past its last block, and how many
    blocks before the last decode to nothing."""
    empty = 0
    while True:
        (header,) = struct.unpack("<I", _exact(f, 3, offset) + b"\0")
        last, kind, size = header & 1, header >> 1 & 3, header >> 3
        if kind == 3:
            raise FrameError(f"reserved block type at byte {offset}")
        offset += 3
        payload = 1 if kind == 1 else size
        _skip(f, payload, offset)
        offset += payload
        if last:
            return offset, empty
        empty += size == 0


def _exact(f: BinaryIO, n: int, offset: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise FrameError(f"truncated zstd stream at byte {offset + len(data)}")
    return data


def _skip(f: BinaryIO, n: int, offset: int) -> None:
    while n > 0:
        data = f.read(min(n, 1 << 20))
        if not data:
            raise FrameError(f"truncated zstd stream at byte {offset}")
        n -= len(data)
        offset += len(data)


def unimportable_name(name: str) -> str | None:
    """Why K3s would not import a bundle (zstd) under the file name `name`; None if it would.
    place refuses such a name, verify warns of it."""
    if name.lower().endswith(ZSTD_SUFFIXES):
        return None
    return f"a bundle is zstd, and K3s reads zstd only from {' or '.join(ZSTD_SUFFIXES)} files"
