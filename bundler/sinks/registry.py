"""Images pushed into a registry (cf. ggcr's remote.Write), keeping their manifest digests.

Order, as the Sink protocol promises: every blob of every image first (skipped when the
repository has it, mounted when another repository we push to has it, else uploaded), with
at most `jobs` at a time; then every manifest by digest; then the tags. So no tag and no
manifest names a blob the registry lacks, and a push that fails part-way names nothing new;
its re-run finds the blobs already there (HEAD) and sends only the rest.

A tag that several platforms of an image share names an OCI image index of them (tags.py);
a tag naming something else is replaced only when forced.

Repository names: `PREFIX/` + the image's repository path (`docker.io/rancher/x:1` with
prefix `mirror` -> `mirror/rancher/x:1`), so K3s finds them through a registries.yaml
`rewrite` (see registries_yaml).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from bundler.config import RegistriesConfig
from bundler.errors import InputError
from bundler.image import Image
from bundler.reference import Reference
from bundler.registry.api import Manifest, Name, RegistryAPI, names, needed
from bundler.registry.endpoint import DEFAULT_TIMEOUT, Endpoint, TLSConfig
from bundler.registry.writer import Writer
from bundler.sinks.tags import TagPlan, Want, plan, unmoved, wants

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


class RegistrySink:
    """Pushes images to `target` (Sink protocol), `jobs` blobs at a time, through the
    registry API push uses too; `force`: replace a tag that names something other than
    another platform of the image (TagTaken otherwise, before any byte is sent)."""

    def __init__(self, target: Target, *, jobs: int = 4, timeout: float = DEFAULT_TIMEOUT,
                 writer: Writer | None = None, force: bool = False):
        self.target = target
        self.force = force
        self.api = RegistryAPI(target.endpoint, timeout, jobs=jobs, writer=writer)
        self.plans: list[TagPlan] = []

    def write(self, images: Sequence[Image]) -> None:
        openers: dict[str, Callable[[], BinaryIO]] = {}
        for image in images:
            for layer in image.layers:
                openers.setdefault(layer.descriptor.digest, layer.open)
            openers.setdefault(image.config_descriptor.digest, _bytes_opener(image.config))
        target = self.target
        blobs = needed((target.repository(i.reference), _blobs(i)) for i in images)
        wanted = wants((target.repository(i.reference), i.reference, i.manifest_descriptor,
                        i.platform, str(i.reference)) for i in images)
        missing, unnamed = self.api.survey(blobs, tag_names(wanted) + untagged(target, images))
        self.plans, to_name, indexes = settle(self.api, wanted, unnamed, self.force)
        with ThreadPoolExecutor(self.api.jobs) as pool:
            for f in [pool.submit(self.api.put_blob, b, openers[b.digest]) for b in missing]:
                f.result()
        self.api.put_manifests(manifests(target, images) + indexes, to_name,
                               lambda: unmoved(self.api, self.plans))


def tag_names(wanted: Sequence[Want]) -> list[Name]:
    """What survey asks of each tag: whether it names its target already (the one manifest,
    or the index of all the platforms pushed)."""
    return [Name(w.repo, w.tag, w.target()[0], w.what) for w in wanted]


def untagged(target: Target, images: Iterable[Image]) -> list[Name]:
    """The names of images referred to by digest alone: their manifests by digest."""
    return names((target.repository(i.reference), i.reference, i.manifest_digest)
                 for i in images if not i.reference.tag)


def settle(api: RegistryAPI, wanted: Sequence[Want], unnamed: Sequence[Name], force: bool
           ) -> tuple[list[TagPlan], list[Name], list[Manifest]]:
    """For survey's `unnamed`: what each tag becomes (tags.plan: TagTaken unless `force` for
    a tag naming something else), the names put_manifests must make resolve (every pushed
    manifest by digest before the index or tag naming it) and the indexes to put."""
    keys = {(n.repo, n.ref) for n in unnamed}
    plans = plan(api, [w for w in wanted if (w.repo, w.tag) in keys], force)
    by_digest = [n for n in unnamed if n.ref == n.digest]
    tagged: list[Name] = []
    for want, p in zip([w for w in wanted if (w.repo, w.tag) in keys], plans, strict=True):
        if p.unchanged:
            continue
        by_digest += [Name(want.repo, d, d, f"{want.reference}: manifest {d} in {want.repo}")
                      for d in p.manifests]
        tagged.append(p.name)
    return plans, by_digest + tagged, [p.index for p in plans if p.index is not None]


def _blobs(image: Image) -> list[tuple[str, int]]:
    """The layers and config of `image`, as (digest, size)."""
    descriptors = [layer.descriptor for layer in image.layers] + [image.config_descriptor]
    return [(d.digest, d.size) for d in descriptors]


def manifests(target: Target, images: Iterable[Image]) -> list[Manifest]:
    """The images' manifests as the registry API puts them, in `target`'s repositories."""
    return [Manifest(target.repository(i.reference), i.manifest_digest, i.manifest,
                     i.manifest_media_type, i.reference) for i in images]


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
