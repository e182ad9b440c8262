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

import hashlib
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from bundler import mediatypes
from bundler.digest import CHUNK, hex_of, sha256_digest
from bundler.errors import DigestMismatch
from bundler.image import Image

OCI_LAYOUT = "oci-layout"
INDEX = "index.json"
DOCKER_MANIFEST = "manifest.json"
REPOSITORIES = "repositories"
BLOB_DIR = "blobs/sha256/"
METADATA = (OCI_LAYOUT, INDEX, DOCKER_MANIFEST, REPOSITORIES)

# containerd's and OCI's annotations for the image name (containerd images/annotations.go).
# containerd and K3s read io.containerd.image.name first; ref.name is what other OCI-layout
# readers look an image up by (skopeo's oci-archive:FILE:NAME, umoci's --image DIR:NAME).
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

_FILE_MODE, _DIR_MODE = 0o644, 0o755
# tar's block and record (POSIX ustar): fixed by the format, written here so that verify, place
# and inspect, which use only the names above, need not load tarfile (~1 MiB) to read them.
_BLOCK = 512
_RECORD = 20 * _BLOCK


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
        # ref.name holds the full name too, as the image-layout spec allows (its grammar
        # admits `/`, `:` and `@`): containerd's own export writes the tag alone there
        # (ociReferenceName), and then two images sharing a tag share a ref.name, of which
        # skopeo takes either and umoci neither. A digest-only reference gets `name@digest`,
        # the one name containerd records for it, rather than no ref.name: unnamed, it could
        # be found in a bundle of several images by no name at all.
        name = image.reference.image_name
        annotations = {ANNOTATION_IMAGE_NAME: name, ANNOTATION_REF_NAME: name}
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


@dataclass(frozen=True)
class Segment:
    """A run of the tar's bytes that is always the same for the same `key`: the metadata
    members, one blob member (header, data, padding), or the end-of-archive marker. The
    compressor may frame and cache each one on its own."""

    key: str
    size: int
    compressible: bool
    chunks: Callable[[], Iterator[bytes]] = field(compare=False, repr=False)
    digest: str | None = None  # the blob's, for blob segments
    # What the bytes must be, known without reading any blob: `head` exactly, then (for a
    # blob) size - len(head) - padding bytes hashing to `digest`, then `padding` zeros.
    # A cached frame is reused only if it decompresses to that (SegmentCheck).
    head: bytes = field(default=b"", compare=False, repr=False)
    padding: int = 0


def segments(images: Sequence[Image]) -> list[Segment]:
    """The whole tar as segments, in order: metadata, layers, the other blobs, the end.

    Layers come first among the blobs, sorted by digest, so a writer can compress each one as
    it arrives, before the configs and manifests (whose digests depend on every layer in the
    uncompressed form) are known. Then configs and manifests, sorted by digest.
    """
    meta = _metadata(images)
    out = [Segment("metadata " + sha256_digest(meta), len(meta), True, lambda: iter((meta,)),
                   head=meta)]
    layers, others = _blobs(images)
    for blobs in (layers, others):
        for digest, (size, opener, compressible) in sorted(blobs.items()):
            out.append(blob_segment(digest, size, opener, compressible))
    total = sum(s.size for s in out) + 2 * _BLOCK
    # Like tar and Python's tarfile, pad the archive to whole 10 KiB records.
    end = bytes(2 * _BLOCK + -total % _RECORD)
    out.append(Segment(f"end {len(end)}", len(end), True, lambda: iter((end,)), head=end))
    return out


def blob_segment(digest: str, size: int, opener: Callable[[], BinaryIO], compressible: bool
                 ) -> Segment:
    """The tar member of one blob: header, data, padding."""
    name = blob_path(digest)
    header = _header(name, size)
    padding = -size % _BLOCK
    return Segment(f"blob {digest} {size} {_TAR_FORMAT}", len(header) + size + padding,
                   compressible, _blob_chunks(name, header, size, opener, padding), digest,
                   header, padding)


# Bumped whenever the bytes of a blob member change for the same blob (cached frames key).
_TAR_FORMAT = "tar-v1"


def _metadata(images: Sequence[Image]) -> bytes:
    buf = io.BytesIO()
    docs = (oci_layout(), index_json(images), manifest_json(images), repositories_json(images))
    for name, data in zip(METADATA, docs, strict=True):
        buf.write(_header(name, len(data)) + data + bytes(-len(data) % _BLOCK))
    for name in ("blobs", BLOB_DIR.rstrip("/")):
        buf.write(_header(name, 0, directory=True))
    return buf.getvalue()


_Blobs = dict[str, tuple[int, Callable[[], BinaryIO], bool]]


def _blobs(images: Sequence[Image]) -> tuple[_Blobs, _Blobs]:
    """Every blob of the images, once, as (layers, configs and manifests):
    digest -> (size, opener, worth compressing)."""
    layers: _Blobs = {}
    others: _Blobs = {}
    for image in images:
        for layer in image.layers:
            d = layer.descriptor
            layers.setdefault(d.digest, (d.size, layer.open,
                                         not mediatypes.is_compressed_layer(d.media_type)))
    for image in images:
        for data in (image.manifest, image.config):
            digest = sha256_digest(data)
            if digest not in layers:
                others.setdefault(digest, (len(data), _bytes_opener(data), True))
    return layers, others


def _blob_chunks(name: str, header: bytes, size: int, opener: Callable[[], BinaryIO],
                 padding: int) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        yield header
        stream = opener()
        try:
            left = size
            while left:
                data = stream.read(min(CHUNK, left))
                if not data:
                    raise DigestMismatch(f"{name}: ended {left} bytes early")
                left -= len(data)
                yield data
            if stream.read(1):
                raise DigestMismatch(f"{name}: longer than its {size} bytes")
        finally:
            getattr(stream, "close", lambda: None)()
        yield bytes(padding)

    return chunks


def _header(name: str, size: int, *, directory: bool = False) -> bytes:
    """The pax header of one member, always the same bytes for the same name and size."""
    import tarfile  # only a build writes headers (see _BLOCK)

    info = tarfile.TarInfo(name)
    info.size = size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = _DIR_MODE if directory else _FILE_MODE
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _bytes_opener(data: bytes) -> Callable[[], BinaryIO]:
    return lambda: io.BytesIO(data)


class SegmentCheck:
    """Checks bytes, fed in any pieces, against what `segments` must be, in order.

    Only what is known without reading a blob is used (each segment's head, its blob's digest
    and size, its padding), so a cached frame can be proved to hold exactly the segments it
    is keyed by before a byte of it is trusted. feed() returns False at the first byte that
    differs (or is one too many); complete() says whether everything arrived.
    """

    def __init__(self, segments: Sequence[Segment]):
        self._pieces = [piece for s in segments for piece in _expected(s)]
        self._at = 0  # index into _pieces
        self._done = 0  # bytes of the current piece already matched
        self._hash = hashlib.sha256()
        self.ok = True

    def feed(self, data: bytes) -> bool:
        view = memoryview(data)
        while self.ok:
            if self._at == len(self._pieces):
                self.ok = not view  # not more bytes than the segments hold
                break
            kind, value, size = self._pieces[self._at]
            if not view and self._done < size:
                break  # a piece of no bytes (an empty blob's digest) is still checked
            take = view[: size - self._done]
            if kind == "bytes":
                self.ok = take == value[self._done : self._done + len(take)]
            elif kind == "zeros":
                self.ok = not any(take)
            else:
                self._hash.update(take)
            self._done += len(take)
            view = view[len(take):]
            if self._done == size:
                if kind == "digest":
                    self.ok = "sha256:" + self._hash.hexdigest() == value
                    self._hash = hashlib.sha256()
                self._at, self._done = self._at + 1, 0
        return self.ok

    def complete(self) -> bool:
        return self.feed(b"") and self._at == len(self._pieces)


def _expected(segment: Segment) -> list[tuple[str, object, int]]:
    body = segment.size - len(segment.head) - segment.padding
    if body and segment.digest is None:
        raise ValueError(f"segment {segment.key}: bytes beyond its head but no digest")
    pieces: list[tuple[str, object, int]] = [("bytes", segment.head, len(segment.head))]
    if segment.digest is not None:
        pieces.append(("digest", segment.digest, body))
    pieces.append(("zeros", None, segment.padding))
    return [p for p in pieces if p[2] or p[0] == "digest"]
