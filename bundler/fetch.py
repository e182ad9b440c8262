"""Parallel staging of layers into the blob store, so downloads overlap each other and the
compression of what already arrived; and resolve_all, which resolves images `jobs` at a time.

Each layer is staged at most once per run, by one of `jobs` daemon threads (daemon, so Ctrl-C
ends the run promptly instead of waiting for a stalled download). Callers ask early with
ensure() and wait only when they need the bytes. A compact build's big gzip layers are only
downloaded, with download(), and staged as the compressor reads them (layer.StreamedLayer).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from bundler import layer as layers
from bundler.cache import BlobStore, CacheUnusable
from bundler.digest import CHUNK, hex_of
from bundler.errors import BundlerError, by_cause
from bundler.image import Image, Layer
from bundler.progress import CountingReader
from bundler.reference import Reference
from bundler.registry import retry

DEFAULT_JOBS = 4


class Fetcher:
    """Stages layers into `store`, as stored or uncompressed, `jobs` at a time; or downloads
    them as they are into `scratch`."""

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
        but not decompressed; the future's result is the file (layer.StreamedLayer reads it).
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
        layers.stage(with_file, self.store, self.uncompressed, what)
        self.mark_staged(layer)

    def mark_staged(self, layer: Layer) -> None:
        """The layer was staged and checked outside this fetcher (layer.StreamedLayer, or
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
        retry.refetch_once(lambda: layers.stage(source, self.store, self.uncompressed, what))
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


class ImagesFailed(BundlerError):
    """Several images failed; the one line names each with its own reason. The exit code is
    the worst of theirs (3, the environment, over 1, the content): a build that could not
    reach one registry needs fixing before it can tell what else is wrong."""

    def __init__(self, failures: list[tuple[Reference, BundlerError]]):
        super().__init__(by_cause([(str(ref), _named(str(e), ref), e.cause)
                                   for ref, e in failures]))
        self.failures = failures
        self.exit_code = max(e.exit_code for _, e in failures)
        self.cause = failures[0][1].cause if len({e.cause for _, e in failures}) == 1 else None


def resolve_all(resolve: Callable[[Reference], Image], refs: Sequence[Reference],
                jobs: int = DEFAULT_JOBS) -> list[Image]:
    """[resolve(ref) for ref in refs], up to `jobs` at a time, in the order of `refs`.

    Every reference is tried even when one fails, so one run names every failing image: one
    failure is raised as it is, several as one ImagesFailed. A cache that cannot be used is
    no image's fault and is raised alone. Threads are daemons, as in Fetcher: Ctrl-C ends
    the run without waiting for a stalled request.
    """
    results: list[Image | None] = [None] * len(refs)
    errors: list[BaseException | None] = [None] * len(refs)
    todo = iter(range(len(refs)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            try:
                results[i] = resolve(refs[i])
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
                errors[i] = e

    workers = min(max(1, jobs), len(refs))
    if workers <= 1:
        work()  # nothing to overlap: no thread
    else:
        threads = [threading.Thread(target=work, daemon=True, name=f"resolve-{n}")
                   for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    failed = [(refs[i], e) for i, e in enumerate(errors) if e is not None]
    for _, e in failed:
        if not isinstance(e, BundlerError) or isinstance(e, CacheUnusable):
            raise e
    if len(failed) == 1:
        raise failed[0][1]
    if failed:
        raise ImagesFailed(failed)  # type: ignore[arg-type]
    return results  # type: ignore[return-value]


def _named(message: str, ref: Reference) -> str:
    # Sources start their messages with the reference (the daemon's with its image name);
    # say which image a message is about when it does not.
    return message if message.startswith((str(ref), ref.image_name)) else f"{ref}: {message}"
