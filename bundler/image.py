"""The image model every source yields and every writer consumes (cf. ggcr's v1.Image).

An image is its manifest bytes, its config bytes and its layers; a layer is a descriptor, a
diff_id, and an opener that streams the blob's bytes checked against the descriptor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from bundler import platform, strictjson
from bundler.digest import DIGEST_RE, sha256_digest
from bundler.errors import RegistryError
from bundler.platform import Platform
from bundler.reference import Reference
from bundler.text import shown


@dataclass(frozen=True)
class Descriptor:
    """media type, digest and size of a blob, as an OCI descriptor names it."""

    media_type: str
    digest: str
    size: int

    @classmethod
    def from_json(cls, obj: object, what: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise RegistryError(f"{what}: descriptor is not an object")
        digest, size = obj.get("digest"), obj.get("size")
        if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
            raise RegistryError(
                f"{what}: descriptor digest {shown(digest, quote=True)} is not sha256:<hex>")
        if not strictjson.is_count(size):
            raise RegistryError(
                f"{what}: descriptor size {shown(size, quote=True)} is not a byte count")
        media_type = obj.get("mediaType", "")
        if not isinstance(media_type, str):
            raise RegistryError(f"{what}: descriptor mediaType is not a string")
        return cls(media_type, digest, size)


@dataclass(frozen=True)
class Layer:
    """One layer: the blob as stored, its uncompressed digest, and how to read the blob."""

    descriptor: Descriptor
    diff_id: str
    open: Callable[[], BinaryIO] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Image:
    """One platform's image, as it will sit in the bundle."""

    reference: Reference
    platform: Platform
    manifest: bytes = field(repr=False)
    manifest_media_type: str
    config: bytes = field(repr=False)
    layers: tuple[Layer, ...]
    index_digest: str | None = None
    # Where the source knows it better than manifest_digest: a daemon's RepoDigests entry.
    upstream_digest: str | None = None
    # The manifest's config descriptor, when whoever built the image parsed the manifest
    # already: index.json may name one large manifest under many names, and
    # config_descriptor would parse it again for each.
    config_desc: Descriptor | None = field(default=None, compare=False, repr=False)

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def manifest_descriptor(self) -> Descriptor:
        return Descriptor(self.manifest_media_type, self.manifest_digest, len(self.manifest))

    @property
    def config_descriptor(self) -> Descriptor:
        if self.config_desc is not None:
            return self.config_desc
        doc = strictjson.loads(self.manifest, strictjson.MANIFEST)
        assert isinstance(doc, dict)  # parse_manifest accepted these bytes before
        return Descriptor.from_json(doc.get("config"), f"{self.reference}: manifest config")


def parse_manifest(body: bytes, what: str) -> tuple[Descriptor, list[Descriptor]]:
    """The config and layer descriptors of an image manifest."""
    return manifest_descriptors(load_document(body, f"{what}: manifest", strictjson.MANIFEST),
                                what)


def manifest_descriptors(doc: object, what: str) -> tuple[Descriptor, list[Descriptor]]:
    """parse_manifest of a manifest already parsed (load_document)."""
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise RegistryError(f"{what}: not a schema 2 image manifest")
    config = Descriptor.from_json(doc.get("config"), f"{what}: config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise RegistryError(f"{what}: manifest has no layers list")
    return config, [Descriptor.from_json(d, f"{what}: layer {i}") for i, d in enumerate(layers)]


def parse_config(body: bytes, layer_count: int, what: str) -> tuple[Platform, list[str]]:
    """The platform and diff_ids an image config declares, checked against the layer count."""
    doc = load_document(body, f"{what}: config", strictjson.CONFIG)
    rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and DIGEST_RE.fullmatch(d) for d in diff_ids
    ):
        raise RegistryError(f"{what}: config has no valid rootfs.diff_ids")
    if len(diff_ids) != layer_count:
        raise RegistryError(
            f"{what}: config lists {len(diff_ids)} diff_ids for {layer_count} layers"
        )
    try:
        have = platform.read(doc)
    except platform.PlatformFieldError as e:
        raise RegistryError(f"{what}: config {e}") from None
    return have, diff_ids


def load_document(body: bytes, what: str, schema: strictjson.Schema | None = None) -> object:
    """A manifest, index or config, parsed as containerd's Go code would read it (or refused)."""
    try:
        return strictjson.loads(body, schema)
    except strictjson.StrictJSONError as e:
        raise RegistryError(f"{what}: bad JSON ({e})") from None


