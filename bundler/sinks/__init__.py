"""Image sinks: each consumes image.Image values through the Sink protocol (any source,
bundler.sources, composes with any sink)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from bundler.image import Image
    from bundler.stage import Stage


@runtime_checkable
class Sink(Protocol):
    """Where images go (sinks/bundle.py, sinks/registry.py).

    `write(images)` is called once with every image: the registry sink takes them as a source
    yields them, the bundle sink through a stage.Stage, which pulls and stages each layer as
    the sink reads it. A sink reads each layer through its opener, at most once unless a retry
    needs it again. Call order inside is the sink's, but
    every sink promises what containers/image promises of PutBlob/PutManifest: an image is
    named (a manifest written, a tag set, a file renamed to its final name) only after every
    blob it refers to is stored and checked. If write raises, nothing is named that was not
    named before the call; blobs already stored may stay (they are content-addressed, and a
    re-run skips them), but no half-written blob is ever stored under its digest. A sink may
    leave the naming to its caller: BundleSink writes under temporary names that the caller's
    AtomicOutputs.commit() renames, so several architectures' files appear together.
    """

    def write(self, images: Sequence[Image] | Stage) -> None: ...
