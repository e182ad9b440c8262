"""The registry at the level of blobs, manifests and tags: what push and the registry sink
both speak.

As regclient's scheme.API (BlobHead, BlobMount, BlobPut, ManifestPut...), RegistryAPI offers
the distribution spec's operations on repositories of one registry, and remembers which
repositories are known to hold which blob (what a mount may come from). The copy steps are
written once over it: `needed` (the one place that says which blobs images need, in which
repositories), `survey` (one round of HEADs: what the registry lacks), `put_blob` (mounted
from a repository that holds it, else uploaded once and mounted into the rest),
`put_manifests` (every image manifest by digest, then every index, then the tags). The
registry sink feeds them images; push feeds them a bundle's metadata and the blobs its
verifying read streams past. `manifest_get` and `document` read what a tag names now (an
index or a manifest, and a manifest's config), bounded, for the sink to decide what the tag
becomes; this module only moves bytes and never interprets them.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from bundler import mediatypes
from bundler.digest import sha256_digest
from bundler.errors import DigestMismatch, InputError, RegistryError
from bundler.reference import Reference
from bundler.registry.client import Client
from bundler.registry.endpoint import DEFAULT_TIMEOUT, Endpoint
from bundler.registry.writer import Writer

Opener = Callable[[], BinaryIO]

# What a config (or any small document a tag's manifest names) may be: distribution refuses
# manifests over 4 MiB, and a config is smaller than its manifest in every image we know.
MAX_DOCUMENT = 4 << 20


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int  # 0 when not known yet (push learns it as the blob streams past)
    repos: tuple[str, ...]  # every repository that needs it


@dataclass(frozen=True)
class Name:
    """A reference a push leaves in `repo`: `ref` (a tag, or the digest itself) resolving to
    manifest `digest`."""

    repo: str
    ref: str
    digest: str
    what: str  # for messages


@dataclass(frozen=True)
class Manifest:
    """A manifest to put into `repo`, by its digest and under every Name that resolves to it."""

    repo: str
    digest: str
    body: bytes = field(repr=False)
    media_type: str
    reference: Reference  # the image it is, for messages


def needed(images: Iterable[tuple[str, Iterable[tuple[str, int]]]]) -> list[Blob]:
    """The blobs that (repository, [(digest, size), ...]) pairs need, each once with every
    repository that needs it, in the order first named."""
    repos: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for repo, blobs in images:
        for digest, size in blobs:
            sizes[digest] = size
            if repo not in repos.setdefault(digest, []):
                repos[digest].append(repo)
    return [Blob(d, sizes[d], tuple(r)) for d, r in repos.items()]


def names(images: Iterable[tuple[str, Reference, str]]) -> list[Name]:
    """What must resolve after a push of these (repository, reference, manifest digest): the
    tag, or for a reference without one, the manifest by its digest."""
    out = []
    for repo, ref, digest in images:
        if ref.tag:
            out.append(Name(repo, ref.tag, digest, f"{ref}: tag {repo}:{ref.tag}"))
        else:
            out.append(Name(repo, digest, digest, f"{ref}: manifest {digest} in {repo}"))
    return out


class RegistryAPI:
    """Blobs, manifests and tags in the repositories of one registry endpoint; the copy
    steps send at most `jobs` requests at a time. Threads may share one."""

    def __init__(self, endpoint: Endpoint, timeout: float = DEFAULT_TIMEOUT, *, jobs: int = 4,
                 writer: Writer | None = None):
        if jobs < 1:
            raise InputError(f"--jobs {jobs}: want at least 1")
        self.jobs = jobs
        self._writer = writer or Writer(endpoint, timeout)
        # Reads go through the pull client (bounded manifest reads, redirects by hand);
        # the push target's repositories are named as they are, never rewritten.
        self._endpoint = dataclasses.replace(endpoint, rewrites=())
        self._timeout = timeout
        self._client: Client | None = None
        self._have: dict[str, set[str]] = {}  # digest -> repositories known to hold it
        self._absent: set[tuple[str, str]] = set()  # (repo, ref) survey found no manifest at
        self._lock = threading.Lock()

    @property
    def uploads(self) -> int:
        """Blobs sent (not found, not mounted): what a re-push must not do."""
        return self._writer.uploads

    @property
    def mounts(self) -> int:
        return self._writer.mounts

    # -- the operations ------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: str, what: str) -> bool:
        found = self._writer.has_blob(repo, digest, what)
        if found:
            self._holds(digest, repo)
        return found

    def blob_mount(self, repo: str, digest: str, source: str, what: str) -> bool:
        """Whether the registry mounted the blob from `source`; False: put it instead."""
        mounted = self._writer.mount(repo, digest, source, what)
        if mounted:
            self._holds(digest, repo)
        return mounted

    def blob_put(self, repo: str, digest: str, size: int, opener: Opener, what: str) -> None:
        """Upload the blob, opened afresh for every attempt."""
        self._writer.upload(repo, digest, size, opener, what)
        self._holds(digest, repo)

    def manifest_digest(self, repo: str, ref: str, what: str) -> str | None:
        """The digest `ref` (tag or digest) resolves to in `repo`, None when it does not."""
        return self._writer.manifest_digest(repo, ref, what)

    def manifest_get(self, repo: str, ref: str, what: str) -> tuple[bytes, str, str] | None:
        """(bytes, media type, digest) of what `ref` (tag or digest) names in `repo`, asked
        for as any index or manifest type, at most client.MAX_MANIFEST bytes; None when the
        registry does not hold it (404), or survey's HEAD found it absent (not asked again:
        a tag this push creates is no GET more)."""
        with self._lock:
            if (repo, ref) in self._absent:
                return None
        try:
            return self._reader().manifest(repo, ref, what)
        except RegistryError as e:
            if e.status == 404:
                return None
            raise

    def document(self, repo: str, digest: str, size: int, what: str,
                 cap: int = MAX_DOCUMENT) -> bytes:
        """A small blob (a config) whole: `size` bytes at most `cap`, checked against
        `digest`; a body cut off mid-way resumes, a longer one is refused."""
        if size > cap:
            raise RegistryError(f"{what}: {size} bytes, larger than {cap}; refused")
        reader = self._reader().blob(repo, digest, what, size)
        chunks, total = [], 0
        try:
            while chunk := reader.read():
                chunks.append(chunk)
                total += len(chunk)
        finally:
            reader.close()
        body = b"".join(chunks)
        if total != size or sha256_digest(body) != digest:
            raise DigestMismatch(f"{what}: expected {size} bytes of {digest}, got {total} "
                                 f"bytes of {sha256_digest(body)}")
        return body

    def manifest_put(self, manifest: Manifest, what: str) -> None:
        """Put the manifest by its digest."""
        self._writer.put_manifest(manifest.repo, manifest.digest, manifest.body,
                                  manifest.media_type, what)

    def tag(self, manifest: Manifest, tag: str, what: str) -> None:
        """Point `tag` in the manifest's repository at it (a PUT of its bytes by tag)."""
        self._writer.put_manifest(manifest.repo, tag, manifest.body, manifest.media_type, what)

    def _reader(self) -> Client:
        with self._lock:
            if self._client is None:
                self._client = Client(self._endpoint, self._timeout)
            return self._client

    def _holds(self, digest: str, repo: str) -> None:
        with self._lock:
            self._have.setdefault(digest, set()).add(repo)

    def _holders(self, digest: str) -> set[str]:
        with self._lock:
            return set(self._have.get(digest, set()))

    # -- the copy steps ------------------------------------------------------------------

    def survey(self, blobs: Sequence[Blob], names: Sequence[Name]
               ) -> tuple[list[Blob], list[Name]]:
        """What the registry lacks, in one round of HEADs, `jobs` at a time: the blobs some
        repository does not hold (one HEAD per blob and repository; what each holds is
        remembered for mounts), and the names that do not yet resolve to their digest (a tag
        that does, names a manifest the registry holds: no HEAD by digest is needed)."""
        pairs = [(b, repo) for b in blobs for repo in b.repos]
        heads: list[Callable[[], object]] = [
            (lambda b=b, repo=repo: self.blob_exists(repo, b.digest, _what(b, repo)))
            for b, repo in pairs]
        heads += [(lambda n=n: self.manifest_digest(n.repo, n.ref, n.what)) for n in names]
        with ThreadPoolExecutor(self.jobs) as pool:
            found = list(pool.map(lambda head: head(), heads))
        missing = [b for b in blobs if set(b.repos) - self._holders(b.digest)]
        resolved = found[len(pairs):]
        with self._lock:
            for n, digest in zip(names, resolved, strict=True):
                (self._absent.add if digest is None else self._absent.discard)((n.repo, n.ref))
        return missing, [n for n, digest in zip(names, resolved, strict=True)
                         if digest != n.digest]

    def put_blob(self, blob: Blob, opener: Opener) -> None:
        """Put `blob` into every repository that lacks it: mounted from one that has it,
        else uploaded once and mounted into the rest."""
        for repo in blob.repos:
            have = self._holders(blob.digest)
            if repo in have:
                continue
            what = _what(blob, repo)
            source = min(have) if have else None
            if not (source and self.blob_mount(repo, blob.digest, source, what)):
                self.blob_put(repo, blob.digest, blob.size, opener, what)

    def put_manifests(self, manifests: Sequence[Manifest], unnamed: Sequence[Name],
                      before_tags: Callable[[], None] | None = None) -> None:
        """Every manifest by digest, then every tag: a tag never names a manifest that is
        not there yet. `unnamed`: survey()'s names that did not resolve (and those the caller
        adds); the rest are left alone, so a re-push sends nothing. The image manifests go
        `jobs` at a time, then the indexes (a registry may refuse an index naming a manifest
        it lacks), then `before_tags` (which may raise: no tag is set), then the tags."""
        by_digest = {(m.repo, m.digest): m for m in manifests}
        puts = {(n.repo, n.digest): by_digest[n.repo, n.digest] for n in unnamed}
        tags = [n for n in unnamed if n.ref != n.digest]
        indexes = [m for m in puts.values() if m.media_type in mediatypes.INDEXES]
        images = [m for m in puts.values() if m.media_type not in mediatypes.INDEXES]
        with ThreadPoolExecutor(self.jobs) as pool:
            for stage in (images, indexes):
                for f in [pool.submit(self.manifest_put, m,
                                      f"{m.reference}: manifest {m.digest} in {m.repo}")
                          for m in stage]:
                    f.result()
            if before_tags is not None:
                before_tags()
            for f in [pool.submit(self.tag, by_digest[n.repo, n.digest], n.ref, n.what)
                      for n in tags]:
                f.result()


def _what(blob: Blob, repo: str) -> str:
    size = f" ({blob.size} bytes)" if blob.size else ""
    return f"blob {blob.digest}{size} in {repo}"
