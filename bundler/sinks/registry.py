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

from bundler import config
from bundler.config import DEFAULT_TIMEOUT, Endpoint, RegistriesConfig
from bundler.errors import InputError
from bundler.image import Image
from bundler.reference import Reference
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
        blobs = self.blobs_of(images)
        missing = self.missing(blobs)
        with ThreadPoolExecutor(self.jobs) as pool:
            for f in [pool.submit(self.put_blob, b, openers[b.digest]) for b in missing]:
                f.result()
        self.put_manifests(images)

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

    def missing(self, blobs: Sequence[Blob]) -> list[Blob]:
        """The blobs some repository lacks (one HEAD per blob and repository, `jobs` at a
        time); what each repository holds is remembered for mounts."""
        pairs = [(b, repo) for b in blobs for repo in b.repos]
        with ThreadPoolExecutor(self.jobs) as pool:
            found = list(pool.map(lambda p: self.writer.has_blob(
                p[1], p[0].digest, self._what(p[0], p[1])), pairs))
        for (b, repo), present in zip(pairs, found, strict=True):
            if present:
                self._have.setdefault(b.digest, set()).add(repo)
        return [b for b in blobs if set(b.repos) - self._have.get(b.digest, set())]

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

    def put_manifests(self, images: Sequence[Image]) -> None:
        """Every manifest by digest, then every tag: a tag never names a manifest that is
        not there yet. Those already in place are left alone (a re-push sends nothing)."""
        for image in images:
            repo = self.target.repository(image.reference)
            what = f"{image.reference}: manifest {image.manifest_digest} in {repo}"
            if self.writer.manifest_digest(repo, image.manifest_digest, what) is None:
                self.writer.put_manifest(repo, image.manifest_digest, image.manifest,
                                         image.manifest_media_type, what)
        for image in images:
            if not image.reference.tag:
                continue
            repo = self.target.repository(image.reference)
            what = f"{image.reference}: tag {repo}:{image.reference.tag}"
            if self.writer.manifest_digest(repo, image.reference.tag, what) != \
                    image.manifest_digest:
                self.writer.put_manifest(repo, image.reference.tag, image.manifest,
                                         image.manifest_media_type, what)

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
    if tls != config.TLSConfig():
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
