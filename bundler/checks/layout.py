"""The OCI image layout a bundle holds, checked once verify has streamed its members.

verify reads the tar once, front to back, keeping the metadata members (oci-layout,
index.json, manifest.json, repositories), the small JSON blobs (manifests, configs) and, for
every blob, its size, the digest of its content (decompressed) and how it is compressed. Layout
then checks what index.json names against those: every image's manifest, config and layers
present, of the sizes their descriptors say, of the media types containerd accepts, each layer
a tar whose content hashes to its config's diff_id, one platform for all, no blob left
unreferenced; and manifest.json and repositories exactly what archive.py writes for those
images (the layout rules live there only). Each distinct manifest is checked once however often
index.json names it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from bundler import mediatypes, platform, reference, strictjson
from bundler.bundleformat import archive
from bundler.errors import BundlerError, InputError
from bundler.image import (
    Descriptor,
    Image,
    Layer,
    load_document,
    manifest_descriptors,
    parse_config,
)
from bundler.platform import Platform
from bundler.strictjson import object_or_empty
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


class Layout:
    """The metadata and blobs a bundle's stream held, checked as an OCI image layout."""

    def __init__(self, metadata: dict[str, bytes], blobs: dict[str, Blob],
                 problem: Callable[[str], None], warn: Callable[[str], None] = lambda _: None):
        self.metadata = metadata
        self.blobs = blobs
        self.problem = problem
        self.warn = warn  # what is worth saying but fails nothing (bundles of older writers)
        self._checked: dict[tuple, dict | None] = {}  # manifests checked once
        self._good: dict[str, dict] | None = None  # of those read whole, by digest
        self._names: set[str] = set()

    def check(self, want: Platform | None) -> list[str]:
        """The names of the images index.json names and that were read whole; every problem
        found on the way goes to `problem`. `want`: the platform every image must have (by
        default, the first image's)."""
        for name in archive.METADATA:
            if name not in self.metadata:
                self.problem(f"{name}: missing")
        if any(name not in self.metadata for name in (archive.OCI_LAYOUT, archive.INDEX)):
            return []
        layout = _json(self.metadata[archive.OCI_LAYOUT], archive.OCI_LAYOUT, self.problem)
        if layout != {"imageLayoutVersion": "1.0.0"}:
            self.problem(f"{archive.OCI_LAYOUT}: not an OCI layout 1.0.0 marker")
        referenced: set[str] = set()
        index = _json(self.metadata[archive.INDEX], archive.INDEX, self.problem)
        entries = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(entries, list) or not entries:
            self.problem(f"{archive.INDEX}: lists no manifests")
            return []
        for text in shared_ref_names(entries):
            self.warn(text)
        images = []
        for i, entry in enumerate(entries):
            images.append(self._image(i, entry, want, referenced))
            # Without a checksum manifest the first image sets the platform for the rest.
            want = want or (images[-1] or {}).get("platform")
        if all(images):
            self._docker_views(images)
        for digest in sorted(set(self.blobs) - referenced):
            self.problem(f"{archive.blob_path(digest)}: not referenced by any image")
        return [img["name"] for img in images if img]

    def _image(self, i: int, entry: object, want: Platform | None, referenced: set[str]
               ) -> dict | None:
        where = f"{archive.INDEX}: manifests[{i}]"
        if not isinstance(entry, dict):
            self.problem(f"{where}: not an object")
            return None
        annotations = entry.get("annotations")
        if not isinstance(annotations, dict):
            self.problem(f"{where}: annotations is not an object")
            return None
        name = annotations.get(archive.ANNOTATION_IMAGE_NAME)
        try:
            if not isinstance(name, str):
                raise InputError("missing or not a string")
            ref = reference.parse(name)
            if ref.image_name != name:
                raise InputError(f"not a full name (want {ref.image_name})")
        except InputError as e:
            self.problem(f"{where}: {archive.ANNOTATION_IMAGE_NAME} {shown(name)}: {e}")
            return None
        if name in self._names:
            # containerd keeps the first entry of a name, a reader of the last another image
            self.problem(f"{where}: {name} is named by an earlier entry too")
            return None
        self._names.add(name)
        try:
            desc = Descriptor.from_json(entry, where)
        except BundlerError as e:
            self.problem(str(e))
            return None
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
        have = checked["platform"]
        if want and not platform.matches(want, have):
            self.problem(f"{name}: config says {have}, the bundle is {want}")
        declared = entry.get("platform")
        if declared is not None:
            if not isinstance(declared, dict):
                self.problem(f"{where}: platform is not an object")
            elif _platform_of(declared) != have:
                self.problem(f"{where}: platform {shown(str(_platform_of(declared)))} but the "
                             f"config says {have}")
        return {"name": name, "platform": have, "image": _Read(
            ref, have, checked["manifest"], desc.media_type, checked["config"],
            checked["layers"], config_read=checked["config_desc"])}

    def _manifest(self, desc: Descriptor, what: str, referenced: set[str]) -> dict | None:
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
        return {"manifest": manifest, "config": config, "config_desc": config_desc,
                "layers": layers, "platform": have}

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

    def index_digests(self) -> dict[str, object]:
        """Image name -> the digest index.json gives it, for the entries that name one."""
        index = object_or_empty(_json(self.metadata.get(archive.INDEX, b"{}"), archive.INDEX,
                                      self.problem))
        entries: dict[str, object] = {}
        manifests = index.get("manifests")
        for e in manifests if isinstance(manifests, list) else []:
            name = object_or_empty(object_or_empty(e).get("annotations")).get(
                archive.ANNOTATION_IMAGE_NAME)
            if isinstance(name, str):
                entries[name] = e.get("digest")
        return entries

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
        return checked["config_desc"].digest, [
            {"digest": x.descriptor.digest, "size": x.descriptor.size} for x in checked["layers"]]

    def _docker_views(self, images: list[dict]) -> None:
        """manifest.json and repositories against what archive.py writes for these images:
        the layout rules live there only."""
        docker = _json(self.metadata.get(archive.DOCKER_MANIFEST, b"[]"),
                       archive.DOCKER_MANIFEST, self.problem)
        if not isinstance(docker, list) or len(docker) != len(images):
            self.problem(f"{archive.DOCKER_MANIFEST}: does not list the {len(images)} images "
                         f"of {archive.INDEX}")
        else:
            # One entry at a time, and only for an entry listing as many layers as its image:
            # an index naming one big manifest many times then costs what manifest.json
            # itself holds, not a copy of the layer list per name.
            for i, (have, img) in enumerate(zip(docker, images, strict=True)):
                image = img["image"]
                layers = have.get("Layers") if isinstance(have, dict) else None
                if not isinstance(layers, list) or len(layers) != len(image.layers) or \
                        have != json.loads(archive.manifest_json([image]))[0]:
                    self.problem(f"{archive.DOCKER_MANIFEST}: entry {i} disagrees with "
                                 f"{archive.INDEX} ({img['name']})")
        repos = _json(self.metadata.get(archive.REPOSITORIES, b"{}"), archive.REPOSITORIES,
                      self.problem)
        if repos != json.loads(archive.repositories_json([img["image"] for img in images])):
            self.problem(f"{archive.REPOSITORIES}: disagrees with {archive.INDEX}")



# Shared ref.name values reported one by one; a hostile index can share thousands.
MAX_SHARED_SHOWN = 10


def shared_ref_names(entries: list) -> list[str]:
    """A warning for each org.opencontainers.image.ref.name that several of index.json's
    `entries` give, naming the images (their io.containerd.image.name) and the value.

    Not a problem: bundles written before ref.name held the full name give the bare tag, and
    two images of one tag (hardened-multus-cni and hardened-multus-thick) then share it.
    containerd and K3s go by io.containerd.image.name and are not misled; a reader that looks
    the name up (skopeo's oci-archive:, umoci) takes one of them silently or refuses both."""
    holders: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        ref_name = object_or_empty(object_or_empty(entry).get("annotations")).get(
            archive.ANNOTATION_REF_NAME)
        if isinstance(ref_name, str):
            holders.setdefault(ref_name, []).append(i)
    shared = [(value, at) for value, at in holders.items() if len(at) > 1]
    warnings = []
    for value, at in shared[:MAX_SHARED_SHOWN]:
        first, second = (f"manifests[{i}] ({_image_name(entries[i])})" for i in at[:2])
        more = f" and {len(at) - 2} more" if len(at) > 2 else ""
        warnings.append(
            f"{archive.INDEX}: {first} and {second}{more} share {archive.ANNOTATION_REF_NAME} "
            f"{shown(value)}: skopeo or umoci asked for that name takes one of them or "
            f"refuses it (containerd goes by {archive.ANNOTATION_IMAGE_NAME})")
    if len(shared) > MAX_SHARED_SHOWN:
        warnings.append(f"{archive.INDEX}: and {len(shared) - MAX_SHARED_SHOWN} more "
                        f"{archive.ANNOTATION_REF_NAME} values shared by several images")
    return warnings


def _image_name(entry: dict) -> str:
    """An entry's io.containerd.image.name for a message: whole when it is a full name (the
    grammar admits printable ASCII only), else shown escaped and cut."""
    name = object_or_empty(entry.get("annotations")).get(archive.ANNOTATION_IMAGE_NAME)
    if not isinstance(name, str):
        return f"no {archive.ANNOTATION_IMAGE_NAME}"
    try:
        if reference.parse(name).image_name == name:
            return name
    except InputError:
        pass
    return shown(name)


@dataclass(frozen=True)
class _Read(Image):
    """An image as verify read it back from the bundle, to hand to archive.py's writers.
    It carries the config descriptor verify parsed: Image.config_descriptor parses the
    manifest on every call, and index.json may name one large manifest under many names."""

    config_read: Descriptor | None = None

    @property
    def config_descriptor(self) -> Descriptor:
        assert self.config_read is not None
        return self.config_read


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


_SCHEMAS = {archive.OCI_LAYOUT: strictjson.OCI_LAYOUT, archive.INDEX: strictjson.INDEX,
            archive.DOCKER_MANIFEST: strictjson.DOCKER_MANIFEST}


def _json(data: bytes, what: str, problem: Callable[[str], None]) -> object:
    try:
        return strictjson.loads(data, _SCHEMAS.get(what))
    except strictjson.StrictJSONError as e:
        problem(f"{what}: bad JSON ({e})")
        return None


def _platform_of(obj: dict) -> Platform | str:
    fields = [obj.get(key) or "" for key in ("os", "architecture", "variant")]
    if not all(isinstance(f, str) for f in fields):
        return "(not strings)"
    return Platform(fields[0], fields[1], fields[2] or None)
