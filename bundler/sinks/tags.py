"""What a pushed tag becomes when several platforms of one image meet under it.

A bundle holds one platform's manifest per image. Pushed alone into an empty repository, a
tag names that manifest, as before. When one push carries several platforms of an image, or
the tag already names another platform's manifest of it (a single manifest whose config is
of another platform, or an index lacking this platform), the tag names an OCI image index
holding every platform's manifest, each under its own digest (cf. `crane index append`,
`docker buildx imagetools create`). The index bytes depend only on its entries, sorted by
platform, so pushing the platforms together or one at a time gives the same index digest.

Anything else the tag names (the same platform under another digest, an artifact, an index
with entries this module cannot account for) is replaced only when the caller forces it;
otherwise TagTaken names the tag, what it is and what it would become, before any byte is
sent. "The same image" means the same repository and tag: a registry keeps no other record
of which manifests belong together.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bundler import mediatypes, platform
from bundler.digest import sha256_digest
from bundler.errors import BundlerError, InputError, RegistryError
from bundler.image import Descriptor, load_document, manifest_descriptors, parse_config
from bundler.platform import Platform
from bundler.reference import Reference
from bundler.registry.api import Manifest, Name, RegistryAPI

_CONFIGS = (mediatypes.OCI_CONFIG, mediatypes.DOCKER_CONFIG)
_ENTRY_KEYS = {"mediaType", "digest", "size", "platform"}


class TagTaken(BundlerError):
    """A tag names something that is not another platform of the image pushed under it."""


class TagMoved(BundlerError):
    """A tag changed between the plan and the tagging (another push set it meanwhile)."""


@dataclass(frozen=True)
class Platformed:
    """One platform's manifest, as an index entry names it."""

    descriptor: Descriptor
    platform: Platform

    def entry(self) -> dict:
        d = self.descriptor
        return {"mediaType": d.media_type, "digest": d.digest, "size": d.size,
                "platform": self.platform.as_json()}


@dataclass(frozen=True)
class Want:
    """What a push has for one tag: each platform's manifest, sorted by platform."""

    repo: str
    tag: str
    reference: Reference
    manifests: tuple[Platformed, ...]

    @property
    def what(self) -> str:
        return f"{self.reference}: tag {self.repo}:{self.tag}"

    def target(self) -> tuple[str, bytes | None]:
        """The digest the tag names after a push into an empty repository, and the index
        bytes (None: the tag names the one manifest)."""
        if len(self.manifests) == 1:
            return self.manifests[0].descriptor.digest, None
        body = index_bytes(self.manifests)
        return sha256_digest(body), body


@dataclass(frozen=True)
class TagPlan:
    """What a push does to one tag: name `name.digest`, put `index` (None: the tag names one
    of the pushed manifests) after every digest in `manifests`; `replaced` says what a forced
    push replaced, `seen` what the tag named when the plan was made."""

    name: Name
    index: Manifest | None
    manifests: tuple[str, ...]
    replaced: str | None = None
    unchanged: bool = False
    seen: str | None = None  # the digest the tag named when planned (None: no such tag)

    @property
    def is_index(self) -> bool:
        return self.index is not None or self.unchanged


def index_bytes(entries: Iterable[Platformed]) -> bytes:
    """An OCI image index of `entries`, sorted by platform: the same entries give the same
    bytes."""
    ordered = sorted(entries, key=lambda p: _order(p.platform))
    return json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
                       "manifests": [p.entry() for p in ordered]},
                      separators=(",", ":")).encode()


def wants(items: Iterable[tuple[str, Reference, Descriptor, Platform | None, str]]
          ) -> list[Want]:
    """The tags of (repository, reference, manifest descriptor, platform, source) items,
    each with every platform's manifest, in the order first named. InputError when two
    sources give one tag two manifests of one platform, or a manifest of no known platform
    meets another."""
    found: dict[tuple[str, str], dict[Platform | None, tuple[Descriptor, str]]] = {}
    refs: dict[tuple[str, str], Reference] = {}
    for repo, ref, desc, plat, source in items:
        if not ref.tag:
            continue
        key = (repo, ref.tag)
        refs.setdefault(key, ref)
        seen = found.setdefault(key, {})
        other = seen.setdefault(plat, (desc, source))
        if other[0].digest != desc.digest:
            raise InputError(f"{other[1]} and {source} both hold {ref} for "
                             f"{plat or 'no platform'}, as {other[0].digest} and "
                             f"{desc.digest}; push one of them")
        if None in seen and len(seen) > 1:
            raise InputError(f"{seen[None][1]}: {ref} declares no platform; it cannot go into "
                             "an index with the other platforms pushed under that tag")
    return [Want(repo, tag, refs[repo, tag], _sorted(seen)) for (repo, tag), seen in found.items()]


def _sorted(seen: dict[Platform | None, tuple[Descriptor, str]]) -> tuple[Platformed, ...]:
    # A manifest of no declared platform is alone under its tag (wants() made sure): the
    # tag names it, and it never goes into an index.
    return tuple(sorted((Platformed(desc, plat or Platform("", "")) for plat, (desc, _)
                         in seen.items()), key=lambda p: _order(p.platform)))


def plan(api: RegistryAPI, wanted: Sequence[Want], force: bool = False) -> list[TagPlan]:
    """What each tag in `wanted` (those survey found not naming their target) becomes,
    from what it names now, read `api.jobs` tags at a time. A plan with `unchanged` leaves
    the tag alone: an index that already holds every pushed manifest. TagTaken for the first
    tag that names something other than another platform of the image, unless `force`."""
    with ThreadPoolExecutor(api.jobs) as pool:
        return list(pool.map(lambda w: _plan_one(api, w, force), wanted))


def unmoved(api: RegistryAPI, plans: Sequence[TagPlan]) -> None:
    """Just before the tags are set: TagMoved for a tag that names something else than when
    it was planned (another push, of another platform, may have set it meanwhile: tagging
    over it would drop that platform). One HEAD per tag, `api.jobs` at a time; the
    manifests and indexes by digest are already there, and are left."""
    def check(p: TagPlan) -> None:
        now = api.manifest_digest(p.name.repo, p.name.ref, p.name.what)
        if now != p.seen and now != "":  # "": a registry that does not say
            raise TagMoved(f"{p.name.what} changed while push ran (it names "
                           f"{now or 'nothing'} now, not {p.seen or 'nothing'}); nothing "
                           "tagged: push again to merge with what it names now")

    with ThreadPoolExecutor(api.jobs) as pool:
        list(pool.map(check, [p for p in plans if not p.unchanged and p.replaced is None]))


def _plan_one(api: RegistryAPI, want: Want, force: bool) -> TagPlan:
    current = api.manifest_get(want.repo, want.tag, want.what)
    made = _decide(api, want, force, current)
    return dataclasses.replace(made, seen=current[2] if current else None)


def _decide(api: RegistryAPI, want: Want, force: bool, current: tuple[bytes, str, str] | None
            ) -> TagPlan:
    if current is None:  # no such tag yet
        return _plan(want, list(want.manifests))
    there, was = _current(api, want, *current)
    why = "not another platform of this image"
    if there is not None and all(m.platform.os for m in want.manifests):
        merged, clash = _merged(there, want.manifests)
        if clash is None:
            if len(merged) == len(there) and current[1] in mediatypes.INDEXES:
                # An index already holding every pushed manifest: nothing to change.
                name = Name(want.repo, want.tag, current[2], want.what)
                return TagPlan(name, None, (), unchanged=True)
            return _plan(want, merged)
        why = f"another {clash.platform} manifest than this push's"
    digest, body = want.target()
    becomes = _described(digest, body, want)
    if not force:
        raise TagTaken(f"{want.what} names {was}: {why}; nothing tagged (it would become "
                       f"{becomes})")
    return _plan(want, list(want.manifests), f"{want.repo}:{want.tag} was {was}, "
                 f"becomes {becomes}")


def _merged(there: list[Platformed], ours: Iterable[Platformed]
            ) -> tuple[list[Platformed], Platformed | None]:
    """`there` with each of `ours` added whose platform it lacks, and the first of ours
    whose platform `there` holds under another digest (None: no clash)."""
    merged = list(there)
    for m in ours:
        same = [p for p in merged if platform.matches(m.platform, p.platform)]
        if not same:
            merged.append(m)
        elif same[0].descriptor.digest != m.descriptor.digest:
            return merged, m
    return merged, None


def _plan(want: Want, entries: list[Platformed], replaced: str | None = None) -> TagPlan:
    ours = tuple(m.descriptor.digest for m in want.manifests)
    if len(entries) == 1:
        digest = entries[0].descriptor.digest
        return TagPlan(Name(want.repo, want.tag, digest, want.what), None, ours, replaced)
    body = index_bytes(entries)
    digest = sha256_digest(body)
    index = Manifest(want.repo, digest, body, mediatypes.OCI_INDEX, want.reference)
    return TagPlan(Name(want.repo, want.tag, digest, want.what), index, ours, replaced)


def _current(api: RegistryAPI, want: Want, body: bytes, media_type: str, digest: str
             ) -> tuple[list[Platformed] | None, str]:
    """The platforms' manifests the tag names now (None: something this module cannot
    account for) and a description of it for messages."""
    what = f"{want.what} ({digest})"
    try:
        doc = load_document(body, what)
    except BundlerError:
        return None, f"{media_type or 'a document'} {digest} that is no manifest"
    if media_type in mediatypes.INDEXES:
        entries = _index_entries(doc, what)
        if entries is None:
            return None, f"index {digest} with entries that are not one image's platforms"
        return entries, f"index {digest} ({_platforms(entries)})"
    if media_type in mediatypes.IMAGE_MANIFESTS:
        plat = _manifest_platform(api, want.repo, doc, what)
        if plat is None:
            return None, f"manifest {digest} that is no image (an artifact)"
        mine = Platformed(Descriptor(media_type, digest, len(body)), plat)
        return [mine], f"manifest {digest} ({plat})"
    return None, f"{media_type or 'a document'} {digest}"


def _index_entries(doc: object, what: str) -> list[Platformed] | None:
    if not isinstance(doc, dict) or set(doc) - {"schemaVersion", "mediaType", "manifests"}:
        return None  # annotations, a subject, an artifactType: not an index we can rewrite
    entries = doc.get("manifests")
    if not isinstance(entries, list) or not entries:
        return None
    out: list[Platformed] = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) - _ENTRY_KEYS \
                or entry.get("mediaType") not in mediatypes.IMAGE_MANIFESTS:
            return None
        p = entry.get("platform")
        if not isinstance(p, dict) or set(p) - {"os", "architecture", "variant"} or \
                not all(isinstance(v, str) for v in p.values()) or platform.is_attestation(entry):
            return None
        try:
            plat = platform.read(p)
        except platform.PlatformFieldError:
            return None  # not platform names: an index this push cannot vouch for
        if not plat.os or not plat.architecture or \
                any(platform.matches(plat, o.platform) for o in out):
            return None
        try:
            out.append(Platformed(Descriptor.from_json(entry, what), plat))
        except RegistryError:
            return None
    return out


def _manifest_platform(api: RegistryAPI, repo: str, doc: object, what: str) -> Platform | None:
    """The platform of an image manifest's config; None for a manifest that is no image."""
    try:
        config, layers = manifest_descriptors(doc, what)
    except RegistryError:
        return None
    if config.media_type not in _CONFIGS:
        return None
    body = api.document(repo, config.digest, config.size, f"{what}: config")
    try:
        plat, _ = parse_config(body, len(layers), what)
    except BundlerError:
        return None
    return plat if plat.os and plat.architecture else None


def _described(digest: str, body: bytes | None, want: Want) -> str:
    if body is None:
        plat = want.manifests[0].platform
        return f"manifest {digest}" + (f" ({plat})" if plat.os else "")
    return f"index {digest} ({_platforms(want.manifests)})"


def _platforms(entries: Iterable[Platformed]) -> str:
    return ", ".join(str(p.platform) for p in sorted(entries, key=lambda p: _order(p.platform)))


def _order(p: Platform) -> tuple[str, str, str]:
    return (p.os, p.architecture, p.variant or "")
