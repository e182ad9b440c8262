"""Parallel staging of layers into the blob store, so downloads overlap each other and the
compression of what already arrived.

Each layer is staged at most once per run, by one of `jobs` daemon threads (daemon, so Ctrl-C
ends the run promptly instead of waiting for a stalled download). Callers ask early with
ensure() and wait only when they need the bytes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import BinaryIO

from bundler import layer as layers
from bundler.cache import BlobStore
from bundler.image import Layer
from bundler.progress import CountingReader
from bundler.registry import retry

DEFAULT_JOBS = 4


class Fetcher:
    """Stages layers into `store`, as stored or uncompressed, `jobs` at a time."""

    def __init__(self, store: BlobStore, uncompressed: bool, jobs: int = DEFAULT_JOBS,
                 bar=None):
        self.store = store
        self.uncompressed = uncompressed
        self._bar = bar
        self._jobs: queue.Queue = queue.Queue()
        self._futures: dict[tuple[str, bool], Future] = {}
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
                self._jobs.put((future, layer, what, check))
        return future

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
            future, layer, what, check = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                self._stage(layer, what, check)
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(e)
            else:
                future.set_result(None)

    def _stage(self, layer: Layer, what: str, check: bool) -> None:
        target = self.target(layer)
        if self.store.has(target) and (not check or self.store.verified(target)):
            return
        source = layer
        if self._bar is not None:
            with self._lock:
                self._bar.total = (self._bar.total or 0) + layer.descriptor.size
                self._bar.refresh()
            source = replace(layer, open=lambda: CountingReader(layer.open(), self._bar))
        retry.refetch_once(lambda: layers.stage(source, self.store, self.uncompressed, what))
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
