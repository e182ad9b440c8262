"""A bundle file's contents, for tests: its plain tar (from the file, or from the segments
archive.py cuts it into), the members of that tar, and a tar written back as a bundle file
(to damage a bundle: read it, change the tar, write it again)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path

import zstandard

from bundler.bundleformat import archive, compress


def plain_tar(bundle: Path) -> bytes:
    """The tar inside a .tar.zst, every frame of it (a bundle is many frames)."""
    with open(bundle, "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()


def joined(segments: Iterable[archive.Segment]) -> bytes:
    """The bytes of `segments` in order: of archive.segments(images), the bundle's tar."""
    return b"".join(chunk for s in segments for chunk in s.chunks())


def zst(data: bytes, level: int = 3) -> bytes:
    """`data` as one zstd frame streamed by bundler's compressor (no content size, as bundler
    streams a frame)."""
    out = io.BytesIO()
    with compress.compressor(level).stream_writer(out, closefd=False) as w:
        w.write(data)
    return out.getvalue()


def write_zst(tar: bytes, path: Path, level: int = 3) -> Path:
    """zst(`tar`, `level`) in `path`, its directory made if need be; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zst(tar, level))
    return path


def members(tar: bytes) -> list[tarfile.TarInfo]:
    """Every member of `tar` as Python's tarfile reads it, in order."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return t.getmembers()


def files(tar: bytes) -> list[tuple[str, bytes]]:
    """(name, data) of every regular file in `tar`, in order."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers() if m.isfile()]


def read_member(tar: bytes, name: str) -> bytes:
    """The data of the member `name` of `tar`."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return t.extractfile(name).read()


def json_member(tar: bytes, name: str) -> object:
    """The member `name` of `tar` (index.json, manifest.json), parsed."""
    return json.loads(read_member(tar, name))
