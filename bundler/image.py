"""The image model every source yields and every writer consumes (cf. ggcr's v1.Image).

An image is its manifest bytes, its config bytes and its layers; a layer is a descriptor, a
diff_id, and an opener that streams the blob's bytes checked against the descriptor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from bundler.digest import DIGEST_RE, sha256_digest
from bundler.errors import RegistryError
from bundler.platform import Platform
from bundler.reference import Reference


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
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise RegistryError(f"{what}: descriptor digest {digest!r} is not sha256:<hex>")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RegistryError(f"{what}: descriptor size {size!r} is not a byte count")
        return cls(str(obj.get("mediaType", "")), digest, size)


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

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def manifest_descriptor(self) -> Descriptor:
        return Descriptor(self.manifest_media_type, self.manifest_digest, len(self.manifest))

    @property
    def config_descriptor(self) -> Descriptor:
        doc = json.loads(self.manifest)
        return Descriptor.from_json(doc.get("config"), f"{self.reference}: manifest config")


def parse_manifest(body: bytes, what: str) -> tuple[Descriptor, list[Descriptor]]:
    """The config and layer descriptors of an image manifest."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise RegistryError(f"{what}: manifest is not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise RegistryError(f"{what}: not a schema 2 image manifest")
    config = Descriptor.from_json(doc.get("config"), f"{what}: config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise RegistryError(f"{what}: manifest has no layers list")
    return config, [Descriptor.from_json(d, f"{what}: layer {i}") for i, d in enumerate(layers)]


def parse_config(body: bytes, layer_count: int, what: str) -> tuple[Platform, list[str]]:
    """The platform and diff_ids an image config declares, checked against the layer count."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise RegistryError(f"{what}: config is not JSON ({e})") from None
    rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and DIGEST_RE.match(d) for d in diff_ids
    ):
        raise RegistryError(f"{what}: config has no valid rootfs.diff_ids")
    if len(diff_ids) != layer_count:
        raise RegistryError(
            f"{what}: config lists {len(diff_ids)} diff_ids for {layer_count} layers"
        )
    return Platform(doc.get("os", ""), doc.get("architecture", ""),
                    doc.get("variant") or None), diff_ids
