"""Image sources: each yields image.Image values through the Source protocol.

As in go-containerregistry (`remote.Image`, `tarball.Image` / `remote.Write`, `tarball.Write`),
any source composes with any sink (bundler.sinks): build is registry source -> bundle sink, push
is bundle source -> registry sink. Both speak only the image.Image model. from_options() is
where a build's settings are handed out: registry settings reach only the registry source, the
daemon's pull policy only the Docker source.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bundler.errors import InputError

if TYPE_CHECKING:
    from bundler.cache import BlobStore
    from bundler.image import Image
    from bundler.platform import Platform
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


SOURCES = ("registry", "docker")

# Opens a source for one platform; its manifests, configs and blobs are kept in the BlobStore.
Opener = Callable[["Platform", "BlobStore"], "Source"]


def check_kind(kind: str) -> str:
    """`kind` if it names a source from_options can open."""
    if kind not in SOURCES:
        raise InputError(f"--source {kind!r}: want one of {', '.join(SOURCES)}")
    return kind


def from_options(kind: str, *, registries: str | None = None, default_endpoint: bool = True,
                 timeout: float | None = None, jobs: int | None = None,
                 pull: str = "missing", challenges: str | Path | None = None) -> Opener:
    """How to open the `kind` source ("registry" or "docker") for one platform.

    Called before any download: an unknown kind and a bad registries.yaml (`registries`, read
    whichever the kind, as it always was) fail here. `default_endpoint`: also try each
    registry itself after its mirrors, as K3s does. `pull` is the Docker source's policy
    (missing, always, never); `timeout` and `jobs` are the registry source's (None: its
    defaults, endpoint.DEFAULT_TIMEOUT and DEFAULT_JOBS), and so is `challenges`: a file
    in which it keeps anonymous registries' Bearer challenges from one run to the next.
    """
    # Imported here, not above: push and inspect read bundles through sources.bundle, which
    # loads this package, and need neither the registries.yaml reader nor the registry
    # client's defaults.
    from bundler.config import load_registries
    from bundler.registry.endpoint import DEFAULT_JOBS, DEFAULT_TIMEOUT

    check_kind(kind)
    config = load_registries(registries, default_endpoint)
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    jobs = DEFAULT_JOBS if jobs is None else jobs

    # Imported when opened: the registry stack (requests) and the docker SDK are heavy, and
    # verify and place, which run on small airgapped nodes, import bundler without them.
    def docker(want: Platform, store: BlobStore) -> Source:
        from bundler.sources.docker import DockerSource

        return DockerSource(want, pull, store)

    def registry(want: Platform, store: BlobStore) -> Source:
        from bundler.sources.registry import RegistrySource

        return RegistrySource(config, want, timeout, store, jobs=jobs, challenges=challenges)

    return docker if kind == "docker" else registry
