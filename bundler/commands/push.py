"""`bundler push`: bundles into a registry, verified on the way, in one pass over each file.

Several bundles (one per architecture) go in one push: their images' tags then name an OCI
index of every platform's manifest, as does a tag that already names another platform of the
image (sinks/tags.py decides, from what each tag names now, before any byte is sent).

bundle source -> registry (through registry/api.py, the blob, manifest and tag operations
the registry sink speaks too). The bundle is read once, front to back, by verify.verify itself
(every member, blob digest, diff_id and the cross-checks of index.json, manifest.json,
repositories and the checksum files); its on_blob hook hands each blob the registry lacks to
a spool file as it streams past, which is uploaded from there, at
most `jobs` at a time (the stream waits when 2 x jobs spools are pending), and only if its
bytes match its digest. Manifests and tags are pushed only when the whole bundle verified:
a bundle that fails verification pushes no manifest (orphan blobs may stay; they are
content-addressed and a registry's garbage collection removes them).

Before the stream, one round of HEADs (`jobs` at a time: every blob in every repository, and
every tag) says what the registry lacks. When it lacks nothing, nothing is sent and the
bundle is not read past its metadata: a re-push costs that round and the start-up.

The names and tags come from the metadata push reads first, the proof from verify's own read
of the file: the two are one file only if the sha256 of push's read (the front, then the
rest of the same open file, hashed on a thread while the HEADs go out) is the one verify
computed. A file swapped or rewritten in between fails with nothing tagged.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from bundler.config import RegistriesConfig
from bundler.errors import BundlerError, InputError, VerificationFailed
from bundler.image import Descriptor
from bundler.platform import Platform
from bundler.reference import Reference
from bundler.registry.api import Blob, RegistryAPI, names, needed
from bundler.registry.endpoint import DEFAULT_TIMEOUT
from bundler.sinks.registry import (
    Target,
    manifests,
    parse_target,
    registries_yaml,
    settle,
    tag_names,
)
from bundler.sinks.tags import TagPlan, Want, unmoved, wants
from bundler.sources import bundle as bundle_source

if TYPE_CHECKING:
    from bundler.checks.verify import Report

log = logging.getLogger(__name__)


@dataclass
class PushResult:
    target: str
    images: list[dict] = field(default_factory=list)
    uploaded: int = 0  # blobs sent
    mounted: int = 0
    skipped: int = 0  # blobs every repository already held
    # Whether the bundle was read and verified: False when the registry already held
    # everything, so nothing was sent (the file was read only up to its metadata).
    verified: bool = False
    registries_yaml: str = ""
    # One line per image whose pinned digest will not resolve from the registry (logged as
    # a warning on success too).
    warnings: list[str] = field(default_factory=list)
    # One line per tag a forced push replaced: what it named and what it names now.
    replaced: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"target": self.target, "images": self.images, "uploaded": self.uploaded,
                "mounted": self.mounted, "skipped": self.skipped, "verified": self.verified,
                "warnings": self.warnings, "replaced": self.replaced}


def push(bundles: str | Path | Sequence[str | Path], to: str, *,
         registries: RegistriesConfig | None = None,
         jobs: int = 4, timeout: float = DEFAULT_TIMEOUT, api: RegistryAPI | None = None,
         manifest: str | Path | None = None, key: str | Path | None = None,
         require_checksum: bool = False, max_inflation: float | None = None,
         allow_rename: bool = False, not_before: datetime | None = None,
         force: bool = False) -> PushResult:
    """Push every image of `bundles` (one bundle, or several: one per architecture) to `to`
    (HOST[/PREFIX]); VerificationFailed (and no manifest pushed) if a bundle does not verify
    or changed while it was read, RegistryError/NetworkError if the registry refuses or
    cannot be reached, TagTaken (nothing sent) for a tag naming something other than another
    platform of its image, unless `force`. A tag several platforms share names an OCI index
    of them (sinks/tags.py).

    `manifest`, `key`, `require_checksum`, `max_inflation`, `allow_rename`, `not_before`: as
    for verify.verify, which push runs on each bundle. Given any of the first three or
    `not_before`, the bundles are verified even when the registry lacks nothing (the user
    asked for proof of the files, so push does not skip the pass)."""
    paths = [Path(bundles)] if isinstance(bundles, (str, Path)) else [Path(b) for b in bundles]
    target = parse_target(to, registries)
    api = api or RegistryAPI(target.endpoint, timeout, jobs=jobs)
    checks = {"manifest": manifest, "key": key, "require_checksum": require_checksum,
              "allow_rename": allow_rename, "not_before": not_before,
              **({} if max_inflation is None else {"max_inflation": max_inflation})}
    with contextlib.ExitStack() as stack:
        reads = []
        for path in paths:
            # The names and tags come from this read of the metadata, the proof from
            # verify's own read of the file: the two are tied by the file's sha256, so a
            # file swapped or rewritten in between cannot have verified manifests tagged
            # with the names of another file's front.
            whole = _WholeFile(stack.enter_context(bundle_source.open_bundle(path)), path)
            stack.callback(whole.stop)
            meta = bundle_source.read_metadata(path, whole)
            whole.hash_rest()
            reads.append(_Read(path, meta, whole))
        result = _push(reads, to, target, api, checks, force)
    entries = [e for r in reads for e in r.meta.entries]
    result.warnings = [w for e in entries if (w := _unresolvable_pin(target, e))]
    for text in result.warnings + result.replaced:
        log.warning("%s", text)
    return result


@dataclass
class _Read:
    """One bundle of a push: its path, the metadata at its front, the read of the whole."""

    path: Path
    meta: bundle_source.Metadata
    whole: _WholeFile


def _unresolvable_pin(target: Target, entry: bundle_source.Entry) -> str | None:
    """The warning for an image named `name@sha256:D` whose manifest in the bundle is not D:
    D was the multi-arch index (a bundle holds only the platform's manifest, never the index
    bytes) or the manifest before --layers uncompressed rewrote it. The registry cannot serve
    name@D, which is what containerd asks a mirror for when a pod pins D."""
    ref, digest = entry.reference, entry.manifest.digest
    if not ref.digest or ref.digest == digest:
        return None
    repo = f"{target.host}/{target.repository(ref)}"
    by_tag = f"{repo}:{ref.tag} and " if ref.tag else ""
    return (f"{ref}: {repo}@{ref.digest} will not resolve: the bundle holds manifest {digest} "
            "(the platform's manifest, not the pinned index, or one --layers uncompressed "
            f"rewrote), pushed as {by_tag}{repo}@{digest}")


def _push(reads: list[_Read], to: str, target: Target, api: RegistryAPI, checks: dict,
          force: bool) -> PushResult:
    _check_collisions(reads, target)
    entries = [(r.path, e) for r in reads for e in r.meta.entries]
    # Layers and configs per repository, from manifest.json at the front (verify checks it
    # against the manifests at the end before anything is named). Sizes are not at the
    # front: Blob.size is filled when the member streams past.
    blobs = needed((target.repository(e.reference),
                    [(d, 0) for d in (*e.layer_digests, e.config_digest)])
                   for _, e in entries)
    # Platforms as index.json declares them; verify holds each to its config.
    wanted = wants((target.repository(e.reference), e.reference, e.manifest, e.platform,
                    str(path)) for path, e in entries)
    untagged = names((target.repository(e.reference), e.reference, e.manifest.digest)
                     for _, e in entries if not e.reference.tag)
    found, unnamed = api.survey(blobs, tag_names(wanted) + untagged)
    plans, to_name, indexes = settle(api, wanted, unnamed, force)
    missing = {b.digest: b for b in found}
    result = PushResult(to, skipped=len(blobs) - len(missing))
    result.replaced = [p.replaced for p in plans if p.replaced]
    tagged = _tagged(wanted, plans)
    asked = checks["manifest"] is not None or checks["key"] is not None \
        or checks["require_checksum"] or checks["not_before"] is not None
    if not missing and not to_name and not asked:
        # Every blob is there and every tag already names its manifest (or an index holding
        # it): nothing would be sent, so nothing unverified can enter the registry, and the
        # bundles are not read past their metadata (a re-push is one round of HEADs).
        # Anything to send, a tag included, goes through the whole verifying pass first.
        # `bundler verify` checks the file itself.
        result.images = [_pushed(target, e.reference, e.manifest.digest, e.platform, tagged)
                         for _, e in entries]
        result.registries_yaml = registries_yaml(target, [e.reference for _, e in entries])
        return result
    documents = _verified(reads, api, missing, checks)
    images = [bundle_source.image_of(e, documents, _unopenable) for _, e in entries]
    api.put_manifests(manifests(target, images) + indexes, to_name,
                      lambda: unmoved(api, plans))
    result.verified = True
    result.uploaded, result.mounted = api.uploads, api.mounts
    result.images = [_pushed(target, i.reference, i.manifest_digest, i.platform, tagged)
                     for i in images]
    result.registries_yaml = registries_yaml(target, images)
    return result


def _verified(reads: list[_Read], api: RegistryAPI, missing: dict[str, Blob], checks: dict
              ) -> dict[str, bytes]:
    """Each bundle read once by verify, in turn, the blobs the registry lacks uploaded from
    the stream; the documents (manifests, configs) verify kept, when every bundle verified
    and is the file its metadata came from. VerificationFailed at the first that is not."""
    from bundler.checks import (
        verify,  # the streaming pass; a re-push that sends nothing never loads it
    )

    documents: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="bundler-push-") as spool_dir:
        uploads = _Uploads(api, missing, Path(spool_dir))
        try:
            for r in reads:
                report = verify.verify(r.path, on_blob=uploads.open, **checks)
                _check_report(r, report)
                documents.update(report.documents)
        except BaseException:
            uploads.finish(cancel=True)  # Ctrl-C or a local failure: start nothing more
            raise
        uploads.finish()
    uploads.raise_first()
    return documents


def _check_report(read: _Read, report: Report) -> None:
    path, sha = read.path, report.sha256
    if sha is not None and read.whole.sha256() != sha:
        raise VerificationFailed(f"{path}: changed while push read it (sha256 "
                                 f"{read.whole.sha256()} when its metadata was read, {sha} "
                                 "when verified); nothing tagged or pushed as a manifest",
                                 report)
    if not report.ok:
        first = report.problems[0] if report.problems else "problems found"
        raise VerificationFailed(f"{path}: does not verify, nothing tagged or pushed as a "
                                 f"manifest: {first}", report)


def _tagged(wanted: list[Want], plans: list[TagPlan]) -> dict[tuple[str, str], str | None]:
    """The index each tag names after the push (None: it names the image's manifest)."""
    planned = {(p.name.repo, p.name.ref): p for p in plans}
    out: dict[tuple[str, str], str | None] = {}
    for w in wanted:
        p = planned.get((w.repo, w.tag))
        if p is None:
            digest, body = w.target()
            out[w.repo, w.tag] = digest if body is not None else None
        else:
            out[w.repo, w.tag] = p.name.digest if p.is_index else None
    return out


class _WholeFile:
    """A bundle read once from its start: what read() hands on (the metadata read) and then,
    on a thread of its own while the registry is asked what it lacks, the rest of the file,
    all hashed. Its sha256 is then the file push took the names from."""

    def __init__(self, f: BinaryIO, path: Path):
        self._f, self._path = f, path
        self._hash = hashlib.sha256()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._hash.update(data)
        return data

    def hash_rest(self) -> None:
        self._thread = threading.Thread(target=self._rest, name="push-hash", daemon=True)
        self._thread.start()

    def _rest(self) -> None:
        try:
            while not self._stopped.is_set() and (data := self._f.read(1 << 20)):
                self._hash.update(data)
        except OSError as e:
            self._error = e

    def sha256(self) -> str:
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise InputError(f"{self._path}: cannot read ({self._error.strerror})")
        return self._hash.hexdigest()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()


def _pushed(target: Target, ref: Reference, digest: str, plat: Platform | None,
            tagged: dict[tuple[str, str], str | None]) -> dict:
    repo = target.repository(ref)
    return {"reference": str(ref), "manifestDigest": digest,
            "platform": str(plat) if plat else None,
            "indexDigest": tagged.get((repo, ref.tag)) if ref.tag else None,
            "pushed": f"{target.host}/{repo}@{digest}"}


def _check_collisions(reads: list[_Read], target: Target) -> None:
    """Repository names drop the source registry: docker.io/a/b:1 and quay.io/a/b:1 would
    both be PREFIX/a/b:1. Refused before any request, naming both."""
    seen: dict[str, Reference] = {}
    for e in (e for r in reads for e in r.meta.entries):
        if not e.reference.tag:
            continue
        name = f"{target.repository(e.reference)}:{e.reference.tag}"
        other = seen.setdefault(name, e.reference)
        if other.registry != e.reference.registry:
            raise InputError(f"{other} and {e.reference} would both be pushed as "
                             f"{target.host}/{name}; push them with different prefixes")


class _Uploads:
    """Spools and uploads the blobs the registry lacks as the verified stream reaches them."""

    def __init__(self, api: RegistryAPI, missing: dict[str, Blob], spool: Path):
        self._api = api
        self._missing = missing
        self._spool = spool
        self._slots = threading.BoundedSemaphore(2 * api.jobs)
        self._pool = ThreadPoolExecutor(api.jobs)
        self._futures: list[Future] = []
        self._taken: set[str] = set()  # spooled whole: another bundle holding it skips it
        self.failed = threading.Event()

    def open(self, digest: str, size: int) -> _Spool | None:
        if digest not in self._missing or digest in self._taken or self.failed.is_set():
            return None
        self._slots.acquire()
        return _Spool(self, digest, size, self._spool / digest.split(":", 1)[1])

    def done(self, spool: _Spool, good: bool) -> None:
        if not good or self.failed.is_set():
            spool.path.unlink(missing_ok=True)
            self._slots.release()
            return
        self._taken.add(spool.digest)
        blob = Blob(spool.digest, spool.size, self._missing[spool.digest].repos)
        self._futures.append(self._pool.submit(self._upload, blob, spool.path))

    def _upload(self, blob: Blob, path: Path) -> None:
        try:
            self._api.put_blob(blob, lambda: open(path, "rb"))
        except BaseException:
            self.failed.set()
            raise
        finally:
            path.unlink(missing_ok=True)
            self._slots.release()

    def finish(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)

    def raise_first(self) -> None:
        for f in self._futures:
            if f.exception() is not None:
                raise f.exception()  # type: ignore[misc]


class _Spool:
    """One blob's bytes on their way to the registry (verify's on_blob writer). It hashes
    what it got itself: verify's report says that the bundle is bad, not which blob bytes
    may still be uploaded."""

    def __init__(self, uploads: _Uploads, digest: str, size: int, path: Path):
        self.uploads, self.digest, self.size, self.path = uploads, digest, size, path
        self._file = open(path, "wb")
        self._hash = hashlib.sha256()
        self._written = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self._written += len(data)

    def close(self) -> None:
        self._file.close()
        good = self._written == self.size and "sha256:" + self._hash.hexdigest() == self.digest
        self.uploads.done(self, good)


def _unopenable(desc: Descriptor, what: str) -> Callable[[], BinaryIO]:
    def refuse() -> BinaryIO:
        raise BundlerError(f"{what}: layer {desc.digest} was uploaded from the stream; "
                           "push does not read it again")
    return refuse

