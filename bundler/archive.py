"""The bundle tar: both layouts containerd reads, written deterministically.

Members, in this order: `oci-layout`, `index.json`, `manifest.json`, `repositories` (metadata
first, as RKE2 arranges its tarballs), the `blobs/` and `blobs/sha256/` directories, then every
blob once, sorted by digest. Every member has mtime 0, uid/gid 0, no owner names and fixed
modes, so the same images always give the same bytes.

containerd prefers the OCI layout (`index.json` + blobs) when `oci-layout` is present; Docker's
`docker load` reads `manifest.json`. index.json names each platform manifest, never the upstream
multi-arch index, whose other platforms are absent (containerd 1.6 fails on those).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Sequence
from typing import BinaryIO

from bundler import mediatypes
from bundler.digest import hex_of, sha256_digest
from bundler.image import Image

OCI_LAYOUT = "oci-layout"
INDEX = "index.json"
DOCKER_MANIFEST = "manifest.json"
REPOSITORIES = "repositories"
BLOB_DIR = "blobs/sha256/"
METADATA = (OCI_LAYOUT, INDEX, DOCKER_MANIFEST, REPOSITORIES)

# containerd's and OCI's annotations for the image name (containerd images/annotations.go).
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

_FILE_MODE, _DIR_MODE = 0o644, 0o755


def blob_path(digest: str) -> str:
    return BLOB_DIR + hex_of(digest)


def dumps(doc: object) -> bytes:
    """JSON as we write it into bundles: compact, keys sorted, so it is the same every time."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def oci_layout() -> bytes:
    return dumps({"imageLayoutVersion": "1.0.0"})


def index_json(images: Sequence[Image]) -> bytes:
    manifests = []
    for image in images:
        d = image.manifest_descriptor
        annotations = {ANNOTATION_IMAGE_NAME: image.reference.image_name}
        if image.reference.tag:
            # containerd's own export writes the tag alone here (ociReferenceName).
            annotations[ANNOTATION_REF_NAME] = image.reference.tag
        manifests.append({
            "mediaType": d.media_type, "digest": d.digest, "size": d.size,
            "platform": image.platform.as_json(), "annotations": annotations,
        })
    return dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": manifests})


def manifest_json(images: Sequence[Image]) -> bytes:
    entries = []
    for image in images:
        tag = image.reference.tagged_name
        entries.append({
            "Config": blob_path(image.config_descriptor.digest),
            "RepoTags": [tag] if tag else [],
            "Layers": [blob_path(layer.descriptor.digest) for layer in image.layers],
        })
    return dumps(entries)


def repositories_json(images: Sequence[Image]) -> bytes:
    """Docker's legacy name -> tag -> image ID map (the ID is the config digest's hex)."""
    repos: dict[str, dict[str, str]] = {}
    for image in images:
        if image.reference.tag:
            repos.setdefault(image.reference.name, {})[image.reference.tag] = hex_of(
                image.config_descriptor.digest
            )
    return dumps(repos)


def blobs(images: Sequence[Image]) -> dict[str, tuple[int, Callable[[], BinaryIO]]]:
    """Every blob of the images, once: digest -> (size, opener)."""
    out: dict[str, tuple[int, Callable[[], BinaryIO]]] = {}
    for image in images:
        for data in (image.manifest, image.config):
            out.setdefault(sha256_digest(data), (len(data), _bytes_opener(data)))
        for layer in image.layers:
            out.setdefault(layer.descriptor.digest, (layer.descriptor.size, layer.open))
    return out


def write(
    images: Sequence[Image], out: BinaryIO, on_bytes: Callable[[int], None] | None = None
) -> None:
    """Write the bundle tar of `images` to `out` (a stream; nothing is seeked)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        metadata = (oci_layout(), index_json(images), manifest_json(images),
                    repositories_json(images))
        for name, data in zip(METADATA, metadata, strict=True):
            tar.addfile(_info(name, len(data)), io.BytesIO(data))
        for name in ("blobs/", BLOB_DIR):
            tar.addfile(_info(name.rstrip("/"), 0, tarfile.DIRTYPE))
        for digest, (size, opener) in sorted(blobs(images).items()):
            stream = opener()
            try:
                tar.addfile(_info(blob_path(digest), size), stream)
            finally:
                getattr(stream, "close", lambda: None)()
            if on_bytes:
                on_bytes(size)


def _info(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.mode = _DIR_MODE if kind == tarfile.DIRTYPE else _FILE_MODE
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _bytes_opener(data: bytes) -> Callable[[], BinaryIO]:
    return lambda: io.BytesIO(data)
