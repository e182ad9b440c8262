"""The OCI image layout a bundle holds, checked once verify has streamed its members.

verify reads the tar once, front to back, keeping the metadata members (oci-layout,
index.json, manifest.json, repositories), the small JSON blobs (manifests, configs) and, for
every blob, its size, the digest of its content (decompressed) and how it is compressed. Layout
reads the metadata with bundleformat.metadata (reporting every problem that reader finds) and
then checks the images it names against those: every image's manifest, config and layers
present, of the sizes their descriptors say, of the media types containerd accepts, each layer
a tar whose content hashes to its config's diff_id, one platform for all, no blob left
unreferenced; each named once, in full; and manifest.json and repositories exactly what
archive.py writes for those images (the layout rules live there only). Each distinct manifest
is checked once however often index.json names it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from bundler import mediatypes, platform, strictjson
from bundler.bundleformat import archive
from bundler.bundleformat.metadata import Entry, Metadata
from bundler.bundleformat.metadata import read as read_metadata
from bundler.errors import BundlerError
from bundler.image import (
    Descriptor,
    Image,
    Layer,
    load_document,
    manifest_descriptors,
    parse_config,
)
from bundler.platform import Platform
from bundler.text import shown


@dataclass
class Blob:
    """What the stream found for one blob member."""

    size: int
    content_digest: str  # sha256 of the decompressed content (= the blob's for plain blobs)
    data: bytes | None  # kept when small enough to be a manifest or config
    compression: str = "plain"  # "gzip", "zstd" or "plain", as sniffed
    tar_head: bytes = b""  # the first 512 bytes of the content, decompressed


# What containerd unpacks each layer media type with; anything else it cannot unpack.
_LAYER_COMPRESSION = {mediatypes.OCI_LAYER: "plain", mediatypes.DOCKER_LAYER: "plain",
                      mediatypes.OCI_LAYER_GZIP: "gzip", mediatypes.DOCKER_LAYER_GZIP: "gzip",
                      mediatypes.OCI_LAYER_ZSTD: "zstd"}


@dataclass(frozen=True)
class _Checked:
    """A manifest, its config and its layers, each found as its descriptor says."""

    manifest: bytes
    config: bytes
    config_desc: Descriptor
    layers: tuple[Layer, ...]
    platform: Platform


class Layout:
    """The metadata and blobs a bundle's stream held, checked as an OCI image layout."""

    def __init__(self, metadata: dict[str, bytes], blobs: dict[str, Blob],
                 problem: Callable[[str], None], warn: Callable[[str], None] = lambda _: None):
        self.metadata = metadata
        self.blobs = blobs
        self.problem = problem
        self.warn = warn  # what is worth saying but fails nothing (bundles of older writers)
        self._checked: dict[tuple, _Checked | None] = {}  # manifests checked once
        self._good: dict[str, _Checked] | None = None  # of those read whole, by digest
        self._names: set[str] = set()
        self._model: Metadata | None = None

    @property
    def model(self) -> Metadata:
        """The metadata members, read once (bundleformat.metadata, the one reader)."""
        if self._model is None:
            self._model = read_metadata(self.metadata)
        return self._model

    def check(self, want: Platform | None) -> list[str]:
        """The names of the images index.json names and that were read whole; every problem
        found on the way goes to `problem`. `want`: the platform every image must have (by
        default, the first image's)."""
        meta = self.model
        for text in meta.index_problems:
            self.problem(text)
        for text in meta.warnings:
            self.warn(text)
        if archive.OCI_LAYOUT not in self.metadata or not meta.listed:
            for text in meta.docker_problems:
                self.problem(text)
            return []
        referenced: set[str] = set()
        images: list[Image | None] = [None] * meta.listed
        for entry in meta.entries:
            image = images[entry.position] = self._image(entry, want, referenced)
            # Without a checksum manifest the first image sets the platform for the rest.
            want = want or (image.platform if image else None)
        for text in meta.docker_problems:
            self.problem(text)
        if all(images) and meta.docker is not None:
            self._docker_views(meta.docker, [i for i in images if i])
        for digest in sorted(set(self.blobs) - referenced):
            self.problem(f"{archive.blob_path(digest)}: not referenced by any image")
        return [img.reference.image_name for img in images if img]

    def _image(self, entry: Entry, want: Platform | None, referenced: set[str]
               ) -> Image | None:
        """The image `entry` names, checked against the blobs, or None and the problems."""
        where, name, desc = entry.where, entry.name, entry.manifest
        if entry.reference.image_name != name:
            self.problem(f"{where}: {archive.ANNOTATION_IMAGE_NAME} {shown(name)}: not a full "
                         f"name (want {entry.reference.image_name})")
            return None
        if name in self._names:
            # containerd keeps the first entry of a name, a reader of the last another image
            self.problem(f"{where}: {name} is named by an earlier entry too")
            return None
        self._names.add(name)
        if desc.media_type not in mediatypes.IMAGE_MANIFESTS:
            self.problem(f"{where}: mediaType {shown(desc.media_type)} is not an image "
                         "manifest's (containerd refuses the import)")
            return None
        # index.json may name one manifest many times (several tags): it is checked once.
        key = (desc.digest, desc.size, desc.media_type)
        if key not in self._checked:
            self._checked[key] = self._manifest(desc, f"{where} ({name})", referenced)
        checked = self._checked[key]
        if checked is None:
            return None
        have = checked.platform
        if want and not platform.matches(want, have):
            self.problem(f"{name}: config says {have}, the bundle is {want}")
        if entry.platform is not None and entry.platform != have:
            self.problem(f"{where}: platform {shown(str(entry.platform))} but the "
                         f"config says {have}")
        return Image(entry.reference, have, checked.manifest, desc.media_type, checked.config,
                     checked.layers, config_desc=checked.config_desc)

    def _manifest(self, desc: Descriptor, what: str, referenced: set[str]) -> _Checked | None:
        """The manifest, its config and layers checked against the blobs (once per digest)."""
        manifest = self._document(desc, f"{what}: manifest", referenced)
        if manifest is None:
            return None
        try:
            doc = load_document(manifest, f"{what}: manifest", strictjson.MANIFEST)
            config_desc, layer_descs = manifest_descriptors(doc, f"{what}: manifest")
        except BundlerError as e:
            self.problem(str(e))
            return None
        # containerd's validateMediaType: the document must be what its descriptor says
        if doc.get("mediaType") not in (None, "", desc.media_type):
            self.problem(f"{what}: manifest says mediaType {shown(doc.get('mediaType'))}, "
                         f"{archive.INDEX} says {desc.media_type}")
            return None
        if "manifests" in doc or "fsLayers" in doc:
            self.problem(f"{what}: manifest has an index's or schema 1's fields")
            return None
        config = self._document(config_desc, f"{what}: config", referenced)
        if config is None:
            return None
        try:
            have, diff_ids = parse_config(config, len(layer_descs), f"{what}: config")
        except BundlerError as e:
            self.problem(str(e))
            return None
        for n, (layer_desc, diff_id) in enumerate(zip(layer_descs, diff_ids, strict=True)):
            self._layer(f"{what}: layer {n} ({archive.blob_path(layer_desc.digest)})",
                        layer_desc, diff_id, referenced)
        layers = tuple(Layer(d, diff_id, _not_reopened)
                       for d, diff_id in zip(layer_descs, diff_ids, strict=True))
        return _Checked(manifest, config, config_desc, layers, have)

    def _document(self, desc: Descriptor, what: str, referenced: set[str]) -> bytes | None:
        referenced.add(desc.digest)
        blob = self.blobs.get(desc.digest)
        if blob is None:
            self.problem(f"{what}: {archive.blob_path(desc.digest)} is missing")
            return None
        if blob.size != desc.size:
            self.problem(f"{what}: {archive.blob_path(desc.digest)} is {blob.size} bytes, "
                         f"descriptor says {desc.size}")
        if blob.data is None:
            self.problem(f"{what}: {archive.blob_path(desc.digest)} is too large for a document")
        return blob.data

    def _layer(self, what: str, desc: Descriptor, diff_id: str, referenced: set[str]) -> None:
        referenced.add(desc.digest)
        blob = self.blobs.get(desc.digest)
        if blob is None:
            self.problem(f"{what}: missing")
            return
        if blob.size != desc.size:
            self.problem(f"{what}: {blob.size} bytes, manifest says {desc.size}")
        if blob.content_digest != diff_id:
            self.problem(f"{what}: diff_id mismatch: config says {diff_id}, "
                         f"uncompressed layer is {blob.content_digest}")
        wanted = _LAYER_COMPRESSION.get(desc.media_type)
        if wanted is None:
            self.problem(f"{what}: mediaType {shown(desc.media_type)} is not a layer type "
                         "containerd unpacks")
        elif wanted != blob.compression:
            self.problem(f"{what}: mediaType {desc.media_type} but the blob is "
                         f"{blob.compression}")
        elif not _is_tar_start(blob.tar_head):
            self.problem(f"{what}: not a tar archive")

    def index_digests(self) -> dict[str, str | None]:
        """Image name -> the digest index.json gives it, for the entries that name one (None
        where the entry's descriptor does not read)."""
        return self.model.by_name()

    def layers_of(self, digest: str) -> tuple[str, list[dict]] | None:
        """(config digest, [{digest, size}] of the layers) of a manifest check() read
        whole (the first, if index.json gave its digest with several sizes or types)."""
        if self._good is None:  # one pass, not one per image: bundles hold hundreds
            self._good = {}
            for (checked_digest, _, _), checked in self._checked.items():
                if checked is not None:
                    self._good.setdefault(checked_digest, checked)
        checked = self._good.get(digest)
        if checked is None:
            return None
        return checked.config_desc.digest, [
            {"digest": x.descriptor.digest, "size": x.descriptor.size} for x in checked.layers]

    def _docker_views(self, docker: tuple[object, ...], images: list[Image]) -> None:
        """manifest.json and repositories against what archive.py writes for these images:
        the layout rules live there only."""
        # One entry at a time, and only for an entry listing as many layers as its image: an
        # index naming one big manifest many times then costs what manifest.json itself
        # holds, not a copy of the layer list per name.
        for i, (have, image) in enumerate(zip(docker, images, strict=True)):
            layers = have.get("Layers") if isinstance(have, dict) else None
            if not isinstance(layers, list) or len(layers) != len(image.layers) or \
                    have != json.loads(archive.manifest_json([image]))[0]:
                self.problem(f"{archive.DOCKER_MANIFEST}: entry {i} disagrees with "
                             f"{archive.INDEX} ({image.reference.image_name})")
        try:
            repos = strictjson.loads(self.metadata.get(archive.REPOSITORIES, b"{}"))
        except strictjson.StrictJSONError as e:
            self.problem(f"{archive.REPOSITORIES}: bad JSON ({e})")
            repos = None
        if repos != json.loads(archive.repositories_json(images)):
            self.problem(f"{archive.REPOSITORIES}: disagrees with {archive.INDEX}")


def _not_reopened() -> BinaryIO:
    raise BundlerError("verify: a layer of a bundle is read once, as it streams")


def _is_tar_start(head: bytes) -> bool:
    """Whether a layer's content can begin a tar: empty, an end-of-archive block, or a header
    whose checksum is right (Go's archive/tar accepts the unsigned or the signed sum)."""
    if not head or head == bytes(len(head)):
        return True
    if len(head) < 512:
        return False
    field = head[148:156].rstrip(b" \0").lstrip(b" ")
    if not field or not all(48 <= c <= 55 for c in field):
        return False
    rest = head[:148] + b" " * 8 + head[156:]
    unsigned = sum(rest)
    signed = unsigned - 256 * (len(rest) - len(rest.translate(None, _HIGH_BYTES)))
    return int(field, 8) in (unsigned, signed)


_HIGH_BYTES = bytes(range(128, 256))  # the bytes a signed char reads as negative
