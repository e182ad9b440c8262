"""Images pushed into a registry (cf. ggcr's remote.Write), keeping their manifest digests.

Order, as the Sink protocol promises: every blob of every image first (skipped when the
repository has it, mounted when another repository we push to has it, else uploaded), with
at most `jobs` at a time; then every manifest by digest; then the tags. So no tag and no
manifest names a blob the registry lacks, and a push that fails part-way names nothing new;
its re-run finds the blobs already there (HEAD) and sends only the rest.

Repository names: `PREFIX/` + the image's repository path (`docker.io/rancher/x:1` with
prefix `mirror` -> `mirror/rancher/x:1`), so K3s finds them through a registries.yaml
`rewrite` (see registries_yaml).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from bundler.config import RegistriesConfig
from bundler.errors import InputError
from bundler.image import Image
from bundler.reference import Reference
from bundler.registry.endpoint import DEFAULT_TIMEOUT, Endpoint, TLSConfig
from bundler.registry.writer import Writer

_PREFIX_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)"
                        r"[a-z0-9]+)*)*")


@dataclass(frozen=True)
class Target:
    """Where a push goes: a registry endpoint and a repository prefix ('' for none)."""

    endpoint: Endpoint
    prefix: str = ""

    @property
    def host(self) -> str:
        return self.endpoint.host

    def repository(self, ref: Reference) -> str:
        return f"{self.prefix}/{ref.repository}" if self.prefix else ref.repository


def parse_target(to: str, registries: RegistriesConfig | None = None) -> Target:
    """`HOST[:PORT][/PREFIX]`, optionally with http:// or https://; TLS and credentials from
    registries.yaml `configs.<host>` or Docker's config.json, as for pulls."""
    scheme, _, rest = to.rpartition("://")
    if scheme not in ("", "http", "https"):
        raise InputError(f"--to {to!r}: want HOST[:PORT][/PREFIX], http:// or https:// only")
    host, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if prefix and not _PREFIX_RE.fullmatch(prefix):
        raise InputError(f"--to {to!r}: prefix {prefix!r} is not a repository path (lower-case "
                         "letters, digits, separators)")
    configs = registries.configs if registries else {}
    try:
        endpoint = RegistriesConfig({}, configs).endpoints(host)[0]
    except ValueError as e:
        raise InputError(f"--to {to!r}: {e}") from None
    if not host or "@" in host:
        raise InputError(f"--to {to!r}: want HOST[:PORT][/PREFIX] (credentials go in "
                         "registries.yaml or Docker's config.json)")
    if scheme:
        endpoint = dataclasses.replace(endpoint, url=f"{scheme}://{host.lower()}")
    return Target(endpoint, prefix)


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    repos: tuple[str, ...]  # every repository that needs it


@dataclass(frozen=True)
class Name:
    """A reference a push leaves in `repo`: `ref` (a tag, or the digest itself) resolving to
    manifest `digest`."""

    repo: str
    ref: str
    digest: str
    what: str  # for messages


class RegistrySink:
    """Pushes images to `target` (Sink protocol), `jobs` blobs at a time."""

    def __init__(self, target: Target, *, jobs: int = 4, timeout: float = DEFAULT_TIMEOUT,
                 writer: Writer | None = None):
        if jobs < 1:
            raise InputError(f"--jobs {jobs}: want at least 1")
        self.target = target
        self.jobs = jobs
        self.writer = writer or Writer(target.endpoint, timeout)
        self._have: dict[str, set[str]] = {}  # digest -> repositories known to hold it
        self._lock = threading.Lock()

    # -- the Sink protocol -----------------------------------------------------------------

    def write(self, images: Sequence[Image]) -> None:
        openers: dict[str, Callable[[], BinaryIO]] = {}
        for image in images:
            for layer in image.layers:
                openers.setdefault(layer.descriptor.digest, layer.open)
            openers.setdefault(image.config_descriptor.digest, _bytes_opener(image.config))
        missing, unnamed = self.survey(self.blobs_of(images), self.names(
            (image.reference, image.manifest_digest) for image in images))
        with ThreadPoolExecutor(self.jobs) as pool:
            for f in [pool.submit(self.put_blob, b, openers[b.digest]) for b in missing]:
                f.result()
        self.put_manifests(images, unnamed)

    # -- the steps -------------------------------------------------------------------------

    def blobs_of(self, images: Iterable[Image]) -> list[Blob]:
        """The layers and configs the images need, each once, with the repositories."""
        repos: dict[str, list[str]] = {}
        sizes: dict[str, int] = {}
        for image in images:
            repo = self.target.repository(image.reference)
            descs = [layer.descriptor for layer in image.layers] + [image.config_descriptor]
            for d in descs:
                sizes[d.digest] = d.size
                if repo not in repos.setdefault(d.digest, []):
                    repos[d.digest].append(repo)
        return [Blob(d, sizes[d], tuple(r)) for d, r in repos.items()]

    def names(self, images: Iterable[tuple[Reference, str]]) -> list[Name]:
        """What must resolve after a push of these (reference, manifest digest) pairs: the
        tag, or for a reference without one, the manifest by its digest."""
        out = []
        for ref, digest in images:
            repo = self.target.repository(ref)
            if ref.tag:
                out.append(Name(repo, ref.tag, digest, f"{ref}: tag {repo}:{ref.tag}"))
            else:
                out.append(Name(repo, digest, digest, f"{ref}: manifest {digest} in {repo}"))
        return out

    def survey(self, blobs: Sequence[Blob], names: Sequence[Name]
               ) -> tuple[list[Blob], list[Name]]:
        """What the registry lacks, in one round of HEADs, `jobs` at a time: the blobs some
        repository does not hold (one HEAD per blob and repository; what each holds is
        remembered for mounts), and the names that do not yet resolve to their digest (a tag
        that does, names a manifest the registry holds: no HEAD by digest is needed)."""
        pairs = [(b, repo) for b in blobs for repo in b.repos]
        heads: list[Callable[[], object]] = [
            (lambda b=b, repo=repo: self.writer.has_blob(repo, b.digest, self._what(b, repo)))
            for b, repo in pairs]
        heads += [(lambda n=n: self.writer.manifest_digest(n.repo, n.ref, n.what))
                  for n in names]
        with ThreadPoolExecutor(self.jobs) as pool:
            found = list(pool.map(lambda head: head(), heads))
        for (b, repo), present in zip(pairs, found, strict=False):
            if present:
                self._have.setdefault(b.digest, set()).add(repo)
        missing = [b for b in blobs if set(b.repos) - self._have.get(b.digest, set())]
        resolved = found[len(pairs):]
        return missing, [n for n, digest in zip(names, resolved, strict=True)
                         if digest != n.digest]

    def put_blob(self, blob: Blob, opener: Callable[[], BinaryIO]) -> None:
        """Put `blob` into every repository that lacks it: mounted from one that has it,
        else uploaded once and mounted into the rest."""
        for repo in blob.repos:
            with self._lock:
                have = set(self._have.get(blob.digest, set()))
            if repo in have:
                continue
            what = self._what(blob, repo)
            source = min(have) if have else None
            if not (source and self.writer.mount(repo, blob.digest, source, what)):
                self.writer.upload(repo, blob.digest, blob.size, opener, what)
            with self._lock:
                self._have.setdefault(blob.digest, set()).add(repo)

    def put_manifests(self, images: Sequence[Image], unnamed: Sequence[Name] | None = None
                      ) -> None:
        """Every manifest by digest, then every tag: a tag never names a manifest that is
        not there yet. `unnamed`: survey()'s names that did not resolve (None: HEAD them
        now); the rest are left alone, so a re-push sends nothing. The manifests go `jobs`
        at a time, then the tags."""
        if unnamed is None:
            _, unnamed = self.survey([], self.names(
                (image.reference, image.manifest_digest) for image in images))
        by_digest = {(self.target.repository(i.reference), i.manifest_digest): i
                     for i in images}
        manifests = {(n.repo, n.digest): by_digest[n.repo, n.digest] for n in unnamed}
        tags = [n for n in unnamed if n.ref != n.digest]
        with ThreadPoolExecutor(self.jobs) as pool:
            for f in [pool.submit(self._put_manifest, repo, digest, image,
                                  f"{image.reference}: manifest {digest} in {repo}")
                      for (repo, digest), image in manifests.items()]:
                f.result()
            for f in [pool.submit(self._put_manifest, n.repo, n.ref,
                                  by_digest[n.repo, n.digest], n.what) for n in tags]:
                f.result()

    def _put_manifest(self, repo: str, ref: str, image: Image, what: str) -> None:
        self.writer.put_manifest(repo, ref, image.manifest, image.manifest_media_type, what)

    def _what(self, blob: Blob, repo: str) -> str:
        size = f" ({blob.size} bytes)" if blob.size else ""
        return f"blob {blob.digest}{size} in {repo}"


def _bytes_opener(data: bytes) -> Callable[[], BinaryIO]:
    import io

    return lambda: io.BytesIO(data)


def registries_yaml(target: Target, images: Sequence[Image] | Sequence[Reference]) -> str:
    """The K3s registries.yaml that sends pulls of these images to `target`: a mirror entry
    for each registry they come from, with a rewrite adding the prefix when there is one.
    No credentials are written: add `configs.<host>.auth` by hand if the registry needs
    them."""
    refs = [i.reference if isinstance(i, Image) else i for i in images]
    lines = ["# K3s: /etc/rancher/k3s/registries.yaml (written by bundler push)", "mirrors:"]
    for registry in sorted({r.registry for r in refs}):
        lines += [f"  {_quoted(registry)}:", "    endpoint:",
                  f"      - {_quoted(target.endpoint.url)}"]
        if target.prefix:
            lines += ["    rewrite:", f"      {_quoted('^(.*)$')}: "
                      f"{_quoted(target.prefix + '/$1')}"]
    tls = target.endpoint.tls
    if tls != TLSConfig():
        lines += ["configs:", f"  {_quoted(target.host)}:", "    tls:"]
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(tls, key):
                lines.append(f"      {key}: {_quoted(getattr(tls, key))}")
        if tls.insecure_skip_verify:
            lines.append("      insecure_skip_verify: true")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    # JSON strings are YAML double-quoted scalars: no character of the name can break out.
    import json

    return json.dumps(text)
