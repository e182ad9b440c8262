"""Test images made on the spot (cf. ggcr's pkg/v1/random): layers, configs, manifests, indexes.

Nothing is checked in: every blob is generated from a seed, so runs are repeatable.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field

import zstandard

from bundler import mediatypes as mt
from bundler import platform as platforms
from bundler import reference
from bundler.image import Descriptor, Image, Layer


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_layer(entries: list[tuple]) -> bytes:
    """A layer tar; entries are ("file", name, data) / ("dir", name) / ("symlink", name,
    target) / ("hardlink", name, target) / ("whiteout", name) / ("opaque", dir)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, *rest in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = b""
            if kind == "file":
                data = rest[0]
                info.mode = 0o755
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, rest[0]
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, rest[0]
            elif kind == "whiteout":
                d, _, base = name.rpartition("/")
                info.name = f"{d}/.wh.{base}" if d else f".wh.{base}"
            elif kind == "opaque":
                info.name = f"{name.rstrip('/')}/.wh..wh..opq"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def random_files(seed: int, count: int = 3, size: int = 20_000) -> list[tuple]:
    rng = random.Random(seed)
    return [("file", f"data/f{seed}-{i}.bin", rng.randbytes(size)) for i in range(count)]


@dataclass
class TestImage:
    """One platform's image: its blobs and manifest, ready to push."""

    manifest: bytes
    media_type: str
    config: bytes
    layers: list[tuple[bytes, str]]  # (blob, media type)
    diff_ids: list[str]
    platform: dict = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return digest(self.manifest)

    @property
    def blobs(self) -> list[bytes]:
        return [self.config] + [b for b, _ in self.layers]


def image(
    layer_tars: list[bytes],
    *,
    oci: bool = False,
    arch: str = "amd64",
    variant: str | None = None,
    compression: list[str] | None = None,
) -> TestImage:
    """An image of the given uncompressed layers; compression per layer: gzip, zstd, none."""
    compression = compression or ["gzip"] * len(layer_tars)
    layers = []
    for tar, comp in zip(layer_tars, compression, strict=True):
        if comp == "gzip":
            layers.append((gzip.compress(tar, compresslevel=6, mtime=0),
                           mt.OCI_LAYER_GZIP if oci else mt.DOCKER_LAYER_GZIP))
        elif comp == "zstd":
            layers.append((zstandard.ZstdCompressor(level=3).compress(tar), mt.OCI_LAYER_ZSTD))
        else:
            layers.append((tar, mt.OCI_LAYER if oci else mt.DOCKER_LAYER))
    plat = {"architecture": arch, "os": "linux"}
    if variant:
        plat["variant"] = variant
    config = json.dumps({
        **plat, "created": "2026-01-01T00:00:00Z",
        "config": {"Entrypoint": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(t) for t in layer_tars]},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layer_tars))],
    }, sort_keys=True).encode()
    media_type = mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG,
                   "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": m, "digest": digest(b), "size": len(b)} for b, m in layers],
    }, indent=3).encode()
    return TestImage(manifest, media_type, config, layers, [digest(t) for t in layer_tars], plat)


def attestation(subject: TestImage) -> TestImage:
    """A buildx-style attestation manifest (platform unknown/unknown) for `subject`."""
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1"}).encode()
    att = image([tar_layer([("file", "att.json", statement)])], oci=True, arch="unknown")
    att.platform = {"architecture": "unknown", "os": "unknown"}
    att.annotations = {"vnd.docker.reference.digest": subject.digest,
                       "vnd.docker.reference.type": "attestation-manifest"}
    return att


def index(children: list[TestImage], *, oci: bool) -> tuple[bytes, str]:
    """A multi-platform index (OCI) or manifest list (Docker) over `children`, in order."""
    media_type = mt.OCI_INDEX if oci else mt.DOCKER_LIST
    entries = []
    for child in children:
        entry = {"mediaType": child.media_type, "digest": child.digest,
                 "size": len(child.manifest), "platform": child.platform}
        if child.annotations:
            entry["annotations"] = child.annotations
        entries.append(entry)
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries},
                      indent=3).encode(), media_type


def model(made: TestImage, name: str) -> Image:
    """`made` as bundler's image model under the reference `name`, its blobs read from memory
    (what a source yields, without a registry)."""
    layers = tuple(Layer(Descriptor(m, digest(b), len(b)), diff, lambda b=b: io.BytesIO(b))
                   for (b, m), diff in zip(made.layers, made.diff_ids, strict=True))
    plat = made.platform
    want = platforms.Platform(plat.get("os", "linux"), plat["architecture"], plat.get("variant"))
    return Image(reference.parse(name), want, made.manifest, made.media_type, made.config, layers)
