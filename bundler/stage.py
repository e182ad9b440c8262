"""Pulling and staging: the step between a source and the bundle sink (cf. ggcr's
cache.Image over a remote.Image).

A source's images have layers that stream from where they come from; the stage gives the
sink the same images with layers that open to the bytes that go into the bundle, staged in
the blob store and checked on the way: the blob against its digest, its uncompressed content
against the diff_id (OCI image-spec config.md). `preserve` stages each blob as stored;
`uncompressed` stages its plain tar under the diff_id, and the manifest is rewritten to match
(mutate.py).

Downloads run `jobs` at a time, each layer at most once per run. The sink says early which
layers it will read (prefetch, start) and waits only when it needs their bytes, so downloads
overlap each other and the compression of what already arrived. A compact build's big gzip
layers are only downloaded, then inflated straight into the compressor and stored on the way
(StreamedLayer). The pull bar is the stage's.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from bundler import decompress, mediatypes, mutate
from bundler.cache import BlobStore
from bundler.digest import CHUNK, hex_of
from bundler.errors import DigestMismatch
from bundler.image import Descriptor, Image, Layer
from bundler.progress import CountingReader, Progress
from bundler.readahead import Ahead
from bundler.registry import retry
from bundler.registry.endpoint import DEFAULT_JOBS


def layer_what(image: Image, i: int) -> str:
    """How errors name a layer: image, index and blob digest."""
    return f"{image.reference}: layer {i} ({image.layers[i].descriptor.digest})"


@dataclass(frozen=True)
class Arrival:
    """A layer of a compact body as it arrives: its diff_id, its plain size, its opener."""

    digest: str
    size: int
    open: Callable[[], BinaryIO]


class Stage:
    """One architecture's images from a source, staged in `store` for the bundle sink.

    `layers` is mutate.PRESERVE or mutate.UNCOMPRESSED. Nothing is downloaded until a layer
    is asked for: images() gives the images as they go into the bundle (their layers
    open from the store, each staged when first opened), prefetch() starts the layers the
    sink will read, and a compact build asks start() for every layer and reads them in tar
    order from arriving(). `scratch` is where start() downloads the big gzip layers to stream
    (needed only for that). Used as a context manager: leaving it stops the downloads.
    """

    def __init__(self, upstream: Sequence[Image], store: BlobStore, *, layers: str,
                 jobs: int = DEFAULT_JOBS, scratch: Path | None = None,
                 progress: Progress | None = None):
        self.upstream = list(upstream)
        self.layers = layers
        self.uncompressed = layers == mutate.UNCOMPRESSED
        self.store = store
        self._pull = (progress or Progress(False)).bar("pull")
        self._fetcher = Fetcher(store, self.uncompressed, jobs, self._pull.feed(), scratch)
        # Every layer by the digest it is stored under (the diff_id when uncompressed), named
        # as the first image that has it names it.
        self.wanted: dict[str, tuple[Layer, str]] = {}
        for image in self.upstream:
            for i, layer in enumerate(image.layers):
                self.wanted.setdefault(self._fetcher.target(layer), (layer, layer_what(image, i)))
        self._downloads: dict[str, Future] = {}

    def images(self) -> list[Image]:
        """The images as they go into the bundle, their layers read from the store.

        Uncompressed: this waits for every layer to be staged, since the rewritten manifest
        needs the plain sizes; start() them first, so they download together.
        """
        return [self._staged(image) for image in self.upstream]

    def _staged(self, image: Image) -> Image:
        fetcher, out = self._fetcher, []
        media_type = mediatypes.uncompressed_layer(image.manifest_media_type)
        for i, layer in enumerate(image.layers):
            what = layer_what(image, i)
            desc = layer.descriptor
            if self.uncompressed:
                fetcher.ensure(layer, what, check=False).result()
                target = fetcher.target(layer)
                desc = Descriptor(media_type, target, self.store.size(target))
            out.append(Layer(desc, layer.diff_id, fetcher.opener(layer, what)))
        if self.uncompressed:
            return mutate.uncompressed(image, out)
        return replace(image, layers=tuple(out))

    def expect(self, digests: Iterable[str] | None = None) -> None:
        """Start the pull bar at what is left to download of the layers stored under
        `digests` (None: every layer); digests of other blobs are left out."""
        wanted = self.wanted if digests is None else \
            {d: self.wanted[d] for d in digests if d in self.wanted}
        size = sum(layer.descriptor.size for d, (layer, _) in wanted.items()
                   if not self.store.has(d))
        self._pull.start(size, f"downloading {_mb(size)} of layers" if size else
                         "downloading nothing: every layer is cached")

    def prefetch(self, digests: Iterable[str]) -> None:
        """Start staging the layers stored under `digests` of the images() given out."""
        for digest in digests:
            self._fetcher.prefetch(digest)

    def all_stored(self) -> bool:
        return all(self.store.has(d) for d in self.wanted)

    def plain_size(self, digest: str) -> int | None:
        """The size of a layer's tar in the bundle, when known before it is pulled."""
        layer, _ = self.wanted[digest]
        if self.store.has(digest):
            return self.store.size(digest)
        if not mediatypes.is_compressed_layer(layer.descriptor.media_type):
            return layer.descriptor.size
        return None

    def start(self) -> None:
        """Start every download (uncompressed): big gzip layers as blobs, the others staged."""
        for digest in sorted(self.wanted):
            layer, what = self.wanted[digest]
            if streams(layer) and not self.store.has(digest):
                self._downloads[digest] = self._fetcher.download(layer, what)
            else:
                self._fetcher.ensure(layer, what)

    def arriving(self) -> Iterator[Arrival]:
        """Every layer (uncompressed), in tar order, as it arrives, after start(): a streamed
        one is checked and stored once read to its end (then Mispredicted may be raised:
        restage() it and read them all again)."""
        fetcher, store = self._fetcher, self.store
        for digest in sorted(self.wanted):
            layer, what = self.wanted[digest]
            streamed = None
            if digest in self._downloads and not store.has(digest):
                blob = self._downloads[digest].result()
                streamed = StreamedLayer.of(blob, layer, store, what)
                if streamed is None:  # not to be streamed; nothing of it is compressed yet
                    fetcher.stage_file(layer, what, blob)
            if streamed is not None:
                yield Arrival(digest, streamed.size, streamed.open)
                fetcher.mark_staged(layer)  # read to its end: checked and in the store now
            else:
                fetcher.ensure(layer, what).result()
                yield Arrival(digest, store.size(digest), fetcher.opener(layer, what))

    def restage(self, mispredicted: Layer) -> None:
        """Stage a layer whose stream was Mispredicted the normal way, from its blob."""
        digest = mispredicted.diff_id
        layer, what = self.wanted[digest]
        self._fetcher.stage_file(layer, what, self._downloads[digest].result())

    def close(self) -> None:
        self._fetcher.close()
        self._pull.close()

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class Fetcher:
    """Stages layers into `store`, as stored or uncompressed, `jobs` at a time; or downloads
    them as they are into `scratch`.

    Each layer is staged at most once, by one of `jobs` daemon threads (daemon, so Ctrl-C ends
    the run promptly instead of waiting for a stalled download). Callers ask early with
    ensure() and wait only when they need the bytes."""

    def __init__(self, store: BlobStore, uncompressed: bool, jobs: int = DEFAULT_JOBS,
                 bar=None, scratch: Path | None = None):
        self.store = store
        self.uncompressed = uncompressed
        self._bar = bar
        self._scratch = scratch  # where download() puts blobs; only a compact build needs it
        self._jobs: queue.Queue = queue.Queue()
        self._futures: dict[tuple[str, object], Future] = {}  # (digest, check or "download")
        self._known: dict[str, tuple[Layer, str]] = {}
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, daemon=True)
                         for _ in range(max(1, jobs))]
        for thread in self._threads:
            thread.start()

    def target(self, layer: Layer) -> str:
        """The digest the layer is stored under: its diff_id when stored uncompressed."""
        return layer.diff_id if self.uncompressed else layer.descriptor.digest

    def ensure(self, layer: Layer, what: str, check: bool = True) -> Future:
        """Make sure the layer is in the store; with `check`, an entry already there is
        re-hashed first (and fetched again if it went bad), since its bytes will be read."""
        key = (self.target(layer), check)
        with self._lock:
            future = self._futures.get(key) or self._futures.get((key[0], True))
            if future is None:
                future = self._futures[key] = Future()
                self._jobs.put((future, lambda: self._stage(layer, what, check)))
        return future

    def download(self, layer: Layer, what: str) -> Future:
        """Download the blob as stored into the scratch directory, checked against its digest
        but not decompressed; the future's result is the file (StreamedLayer reads it).
        """
        key = (layer.descriptor.digest, "download")
        with self._lock:
            future = self._futures.get(key)
            if future is None:
                future = self._futures[key] = Future()
                self._jobs.put((future, lambda: self._download(layer, what)))
        return future

    def stage_file(self, layer: Layer, what: str, path: Path) -> None:
        """Stage the layer the normal way from its blob downloaded to `path` (a streamed layer
        that did not go as predicted); later ensure() calls find it done."""
        with_file = replace(layer, open=lambda: open(path, "rb"))
        stage_layer(with_file, self.store, self.uncompressed, what)
        self.mark_staged(layer)

    def mark_staged(self, layer: Layer) -> None:
        """The layer was staged and checked outside this fetcher (StreamedLayer, or
        stage_file): ensure() need not look at it again."""
        done: Future = Future()
        done.set_result(None)
        with self._lock:
            self._futures[(self.target(layer), True)] = done

    def opener(self, layer: Layer, what: str) -> Callable[[], BinaryIO]:
        """Opens the staged layer, waiting for (and if need be starting) its download."""
        self._known[self.target(layer)] = (layer, what)

        def open_staged() -> BinaryIO:
            self.ensure(layer, what).result()
            return self.store.open(self.target(layer))

        return open_staged

    def prefetch(self, digest: str) -> None:
        """Start staging the layer stored under `digest`, if an opener was made for it."""
        if digest in self._known:
            self.ensure(*self._known[digest])

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, work = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = work()
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(e)
            else:
                future.set_result(result)

    def _stage(self, layer: Layer, what: str, check: bool) -> None:
        target = self.target(layer)
        if self.store.has(target) and (not check or self.store.verified(target)):
            return
        source = self._counted(layer, what)
        retry.refetch_once(lambda: stage_layer(source, self.store, self.uncompressed, what))
        self._refresh()

    def _download(self, layer: Layer, what: str) -> Path:
        if self._scratch is None:
            raise ValueError("Fetcher.download needs a scratch directory")
        path = self._scratch / hex_of(layer.descriptor.digest)
        source = self._counted(layer, what)
        retry.refetch_once(lambda: _copy(source.open(), path))
        self._refresh()
        return path

    def _counted(self, layer: Layer, what: str) -> Layer:
        """`layer`, its bytes counted on the pull bar as they are read."""
        if self._bar is None:
            return layer
        with self._lock:
            self._bar.total = (self._bar.total or 0) + layer.descriptor.size
            self._bar.refresh()
        return replace(layer, open=lambda: CountingReader(layer.open(), self._bar, what))

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.refresh()  # tqdm redraws at most every 0.1 s: show where it ended

    def close(self) -> None:
        for future in list(self._futures.values()):
            future.cancel()
        for _ in self._threads:
            self._jobs.put(None)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _copy(src: BinaryIO, path: Path) -> None:
    """All of `src` (a reader that checks its digest at its end) into the file `path`."""
    try:
        with open(path, "wb") as f:
            while chunk := src.read(CHUNK):
                f.write(chunk)
    finally:
        getattr(src, "close", lambda: None)()


# Layers from this size (as stored) are staged on two threads; below it a thread's start
# costs more than it saves.
PIPELINE_SIZE = 4 << 20


def stage_layer(layer: Layer, store: BlobStore, uncompressed: bool, what: str) -> None:
    """Copy the layer into `store` (under its diff_id when `uncompressed`, else under its own
    digest); both digests are checked. On any failure nothing is added to the store."""
    src = layer.open()
    try:
        with store.writer() as pending:
            tee = decompress.Tee(src, None if uncompressed else pending.write)
            actual = decompress.uncompressed_digest(
                tee, what, pending.write if uncompressed else None,
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
# (the bundle sink). Staging a 1 GiB layer first made the build 2.4x zstd's time on the
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


def streams(layer: Layer) -> bool:
    """Whether a compact build inflates this layer into its compressor instead of staging it:
    a big layer whose manifest says gzip (what it really is is sniffed once it is on disk)."""
    return layer.descriptor.media_type in _GZIP_LAYER_TYPES and \
        layer.descriptor.size >= STREAM_SIZE


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
        size = decompress.predicted_size(path)
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
        self._chunks = Ahead(decompress.plain_chunks(self._raw, streamed.what, STREAM_CHUNK),
                             "inflate",
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
