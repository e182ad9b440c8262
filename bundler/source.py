"""The two shapes every medium speaks: a Source yields images, a Sink takes them.

As in go-containerregistry (`remote.Image`, `tarball.Image` / `remote.Write`, `tarball.Write`),
any source composes with any sink: build is registry source -> bundle sink, push is bundle
source -> registry sink. Both speak only the image.Image model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bundler.image import Image
from bundler.reference import Reference


@runtime_checkable
class Source(Protocol):
    """Where images come from (sources/registry.py, sources/docker.py, sources/bundle.py).

    `image(ref)` resolves one reference to the image for the source's platform and returns it
    with its manifest and config bytes in hand and its layers unread: each Layer.open() streams
    the blob, checked against its descriptor by the time the stream ends (a mismatch raises
    DigestMismatch from read()). It may be called any number of times, in any order, and
    from several threads. On failure it raises a BundlerError naming `ref` and nothing the
    source returned before is invalidated.
    """

    def image(self, ref: Reference) -> Image: ...

    def images(self, refs: list[Reference]) -> list[Image]:
        """[image(ref) for ref in refs], in that order, perhaps several at a time; when any
        fail, one error names every failing reference."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Where images go (sinks/bundle.py, sinks/registry.py).

    `write(images)` is called once with every image; a sink reads each layer through its
    opener, at most once unless a retry needs it again. Call order inside is the sink's, but
    every sink promises what containers/image promises of PutBlob/PutManifest: an image is
    named (a manifest written, a tag set, a file renamed to its final name) only after every
    blob it refers to is stored and checked. If write raises, nothing is named that was not
    named before the call; blobs already stored may stay (they are content-addressed, and a
    re-run skips them), but no half-written blob is ever stored under its digest. A sink may
    leave the naming to its caller: BundleSink writes under temporary names that the caller's
    AtomicOutputs.commit() renames, so several architectures' files appear together.
    """

    def write(self, images: Sequence[Image]) -> None: ...
