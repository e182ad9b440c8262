"""A bundle file read back as images (cf. ggcr's tarball.Image), without trusting it.

archive.py puts the metadata members (oci-layout, index.json, manifest.json, repositories)
first, in their own zstd frame; so what a bundle holds is known after decompressing that frame
alone. A preserve bundle has one frame per blob member (sinks.bundle.frame_groups), so any one blob
can be read by seeking to its frame; a compact bundle has the blobs in one frame, read from
its start. The tar is read with TarStream and the metadata with bundleformat.metadata, the
reader verify uses, refusing the bundle on the first problem it finds: every byte is
untrusted, and every blob read through this source is checked against its digest
(VerifyingReader) before its stream ends.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import zstandard

from bundler import localfile
from bundler.bundleformat import archive, compress, metadata
from bundler.bundleformat.metadata import Entry, Metadata  # push names them from here
from bundler.digest import CHUNK, VerifyingReader, sha256_digest
from bundler.errors import DigestMismatch, InputError
from bundler.image import Descriptor, Image, Layer, parse_config, parse_manifest
from bundler.reference import Reference
from bundler.tarstream import REGULAR, TarError, TarStream

# Metadata members and JSON blobs are small (verify uses the same bound).
MAX_DOCUMENT = 4 << 20
# The blob member headers at the front of each frame: a header and perhaps a pax header.
_HEAD = 3 * 512
# A zstd frame header is at most 18 bytes, and a block holds at most 128 KiB: the member
# header at a frame's start decodes from its first block, within this much of the frame.
_FRAME_HEADER = 18
_FIRST_BLOCK = _FRAME_HEADER + 3 + (128 << 10)
# verify.MAX_MEMBERS + 2 (a test holds them equal; inspect need not load verify): one frame
# per member run of ours, plus the metadata frame and the end marker's.
MAX_FRAMES = 100_002
# What the metadata at the front may decompress to: its four members, each with a pax
# header, and the reader's 1 MiB read-ahead; a hostile front cannot make read_metadata walk
# a zstd bomb of directory entries.
_FRONT_LIMIT = len(archive.METADATA) * (MAX_DOCUMENT + (1 << 20)) + (2 << 20)


def open_bundle(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file; InputError naming it otherwise."""
    try:
        return localfile.open_regular(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None


def _plain(f: BinaryIO, path: Path, limit: int | None = None) -> BinaryIO:
    """The tar in `f`, from where `f` stands, decompressed across frames; at most `limit`
    bytes of it (default: what verify allows the whole bundle, inflation_limit)."""
    dctx = zstandard.ZstdDecompressor(max_window_size=compress.MAX_WINDOW)
    plain = dctx.stream_reader(f, read_size=CHUNK, read_across_frames=True)
    if limit is None:
        limit = inflation_limit(os.fstat(f.fileno()).st_size)
    return _Capped(plain, limit, path)  # type: ignore[return-value]


def inflation_limit(size: int) -> int:
    """How much a bundle of `size` bytes may decompress to before a reader gives up: a zstd
    frame can expand some 30,000-fold, and a reader that walks the tar must end in time.
    verify's bound, so a bundle verify accepts is never refused here."""
    from bundler.checks import verify  # its constants; verify itself is not run here

    return max(int(size * verify.DEFAULT_MAX_INFLATION), verify.INFLATION_FLOOR)


class _Capped:
    """A stream that fails once more than `limit` bytes have come out of it."""

    def __init__(self, raw: BinaryIO, limit: int, path: Path):
        self._raw, self._left, self._limit, self._path = raw, limit, limit, path

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._left -= len(data)
        if self._left < 0:
            raise InputError(f"{self._path}: decompresses to more than {self._limit} bytes "
                             "before what was asked for; stopped reading (not a bundle bundler "
                             "wrote?)")
        return data


def read_metadata(path: Path, f: BinaryIO | None = None) -> Metadata:
    """The metadata at the front of the bundle; only what precedes the first blob is
    decompressed. InputError naming the file when it is not a bundle bundler can read.
    `f`: the bundle already open at its start (push hashes what is read through it), else
    `path` is opened."""
    if f is None:
        with open_bundle(path) as opened:
            return read_metadata(path, opened)
    try:
        members = _front(TarStream(_plain(f, path, _FRONT_LIMIT)), path)
    except TarError as e:
        raise InputError(f"{path}: tar: {e}") from None
    except zstandard.ZstdError as e:
        raise InputError(f"{path}: not a zstd bundle ({e})") from None
    return metadata.read_strict(members, str(path))


def _front(tar: TarStream, path: Path) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    for member in tar:
        if member.kind != REGULAR:
            continue
        if member.name not in archive.METADATA:
            break  # the first blob: the metadata, if any, came before it
        if member.name in members:
            raise InputError(f"{path}: {member.name} appears twice")
        if member.size > MAX_DOCUMENT:
            raise InputError(f"{path}: {member.name} is {member.size} bytes, more than "
                             f"{MAX_DOCUMENT}")
        members[member.name] = b"".join(iter(tar.read_data, b""))
        if len(members) == len(archive.METADATA):
            break
    for name in (archive.INDEX, archive.DOCKER_MANIFEST):
        if name not in members:
            raise InputError(f"{path}: no {name} before the first blob; not a bundle bundler "
                             "reads (metadata must be at the front)")
    return members


# -- blobs at frame starts (preserve bundles) ----------------------------------------------


def frame_index(path: Path) -> dict[str, tuple[int, int]]:
    """blob digest -> (offset of the zstd frame whose tar bytes start with that blob's member,
    the member's size). In a preserve bundle that is every blob; in a compact one, at most
    the first layer. Only the start of each frame is decompressed, and never past its end:
    the work is linear in the frames, and a file of more frames than a bundle can have is
    refused (each frame of ours starts a member run, and verify allows MAX_MEMBERS members)."""
    found: dict[str, tuple[int, int]] = {}
    with open_bundle(path) as f:
        spans = compress.frame_spans(f, path, MAX_FRAMES)
        dctx = zstandard.ZstdDecompressor(max_window_size=compress.MAX_WINDOW)
        for offset, length in spans[1:]:
            member = _first_member(dctx, f, offset, length)
            if member is not None:
                found.setdefault(member[0], (offset, member[1]))
    return found


def _first_member(dctx: zstandard.ZstdDecompressor, f: BinaryIO, offset: int, length: int
                  ) -> tuple[str, int] | None:
    # pread: a buffered read after each seek would fetch 8 KiB for every 9-byte frame.
    try:
        declared = zstandard.get_frame_parameters(
            os.pread(f.fileno(), _FRAME_HEADER, offset)).content_size
    except zstandard.ZstdError:
        return None
    if declared < 512:  # (CONTENTSIZE_UNKNOWN is 2^64 - 1) no room for a member header
        return None
    # Asked for _HEAD bytes, zstandard's reader reads its source until it has them: bounded
    # to the frame, it cannot run on through the frames after it (that made an inspect of
    # N empty frames take N^2 reads).
    window = compress.Window(f.fileno(), offset, min(length, _FIRST_BLOCK))
    try:
        head = dctx.stream_reader(window, read_size=16 << 10).read(_HEAD)
        member = next(iter(TarStream(io.BytesIO(head))), None)
    except (TarError, zstandard.ZstdError):
        return None  # not a member boundary (or not a blob): read by streaming instead
    if member is None or member.kind != REGULAR or not member.name.startswith(archive.BLOB_DIR):
        return None
    return "sha256:" + member.name[len(archive.BLOB_DIR):], member.size


class _MemberData:
    """The data of one tar member, as a stream; closes the file with it. A bundle that
    cannot be decoded is the blob's fault: DigestMismatch, as for wrong bytes."""

    def __init__(self, f: BinaryIO, tar: TarStream, what: str = "blob"):
        self._f, self._tar, self._what = f, tar, what

    def read(self, n: int = CHUNK) -> bytes:
        try:
            return self._tar.read_data(n if n and n > 0 else CHUNK)
        except (TarError, zstandard.ZstdError) as e:
            raise DigestMismatch(f"{self._what}: cannot read ({e})") from None

    def close(self) -> None:
        self._f.close()


def open_blob(path: Path, digest: str, frames: dict[str, tuple[int, int]]) -> BinaryIO:
    """The bytes of blob `digest` (unchecked: wrap in VerifyingReader). From its own frame
    when it starts one, else by reading the tar from the start up to it."""
    f = open_bundle(path)
    try:
        if digest in frames:
            f.seek(frames[digest][0])
            dctx = zstandard.ZstdDecompressor(max_window_size=compress.MAX_WINDOW)
            tar = TarStream(dctx.stream_reader(f, read_size=CHUNK))
            wanted = iter(tar)
        else:
            tar = TarStream(_plain(f, path))
            wanted = iter(tar)
        name = archive.blob_path(digest)
        for member in wanted:
            if member.name == name and member.kind == REGULAR:
                return _MemberData(f, tar, f"{path}: {name}")  # type: ignore[return-value]
            if digest in frames:
                break
    except (TarError, zstandard.ZstdError) as e:
        f.close()
        raise DigestMismatch(f"{path}: {archive.blob_path(digest)}: cannot read ({e})") from None
    except BaseException:
        f.close()
        raise
    f.close()
    raise DigestMismatch(f"{path}: {archive.blob_path(digest)} is missing")


def read_documents(path: Path, digests: set[str], frames: dict[str, tuple[int, int]]
                   ) -> dict[str, bytes]:
    """Small blobs (manifests, configs) by digest, each checked; those at frame starts are
    read on their own, the rest in one pass over the tar."""
    out: dict[str, bytes] = {}
    rest = set()
    for digest in digests:
        if digest in frames:
            out[digest] = _document(open_blob(path, digest, frames), digest, path)
        else:
            rest.add(digest)
    if rest:
        with open_bundle(path) as f:
            tar = TarStream(_plain(f, path))
            try:
                for member in tar:
                    digest = "sha256:" + member.name[len(archive.BLOB_DIR):]
                    if member.name.startswith(archive.BLOB_DIR) and digest in rest:
                        out[digest] = _document(_MemberData(io.BytesIO(), tar), digest, path)
                        rest.discard(digest)
                        if not rest:
                            break
            except (TarError, zstandard.ZstdError) as e:
                raise DigestMismatch(f"{path}: tar: {e}") from None
    if rest:
        raise DigestMismatch(f"{path}: {archive.blob_path(min(rest))} is missing")
    return out


def _document(stream: BinaryIO, digest: str, path: Path) -> bytes:
    what = f"{path}: {archive.blob_path(digest)}"
    try:
        data = stream.read(MAX_DOCUMENT + 1)
        while len(data) <= MAX_DOCUMENT and (more := stream.read(MAX_DOCUMENT + 1 - len(data))):
            data += more
    except (TarError, zstandard.ZstdError) as e:
        raise DigestMismatch(f"{what}: cannot read ({e})") from None
    finally:
        stream.close()
    if len(data) > MAX_DOCUMENT:
        raise DigestMismatch(f"{what}: more than {MAX_DOCUMENT} bytes, too large for a document")
    if sha256_digest(data) != digest:
        raise DigestMismatch(f"{what}: content hashes to {sha256_digest(data)}")
    return data


# -- the source ----------------------------------------------------------------------------


def image_of(entry: Entry, documents: Mapping[str, bytes],
             opener: Callable[[Descriptor, str], Callable[[], BinaryIO]]) -> Image:
    """The image `entry` names, built from its manifest and config in `documents` (checked
    blobs by digest: read_documents', or those verify kept while streaming); `opener(layer
    descriptor, image)` says how its layers are read. DigestMismatch when a document is not
    there or the manifest names another config than manifest.json."""
    what = str(entry.reference)
    manifest = _kept(documents, entry.manifest.digest, what)
    config_desc, layer_descs = parse_manifest(manifest, what)
    if config_desc.digest != entry.config_digest:
        raise DigestMismatch(f"{what}: manifest names config {config_desc.digest}, "
                             f"{archive.DOCKER_MANIFEST} says {entry.config_digest}")
    config = _kept(documents, config_desc.digest, what)
    plat, diff_ids = parse_config(config, len(layer_descs), what)
    layers = tuple(Layer(d, diff_id, opener(d, what))
                   for d, diff_id in zip(layer_descs, diff_ids, strict=True))
    return Image(entry.reference, plat, manifest, entry.manifest.media_type, config, layers,
                 config_desc=config_desc)


def _kept(documents: Mapping[str, bytes], digest: str, what: str) -> bytes:
    data = documents.get(digest)
    if data is None:
        raise DigestMismatch(f"{what}: {archive.blob_path(digest)} was not read as a document")
    return data


class BundleSource:
    """The images of one bundle file (Source protocol): image(ref) for one name,
    images() for all of them in index.json's order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.frames = frame_index(self.path)
        self._documents: dict[str, bytes] | None = None

    def images(self, refs: list[Reference] | None = None) -> list[Image]:
        """The images `refs` name, in that order; every image of the bundle, in index.json's
        order, when None."""
        if refs is None:
            return [self._image(entry) for entry in self.metadata.entries]
        missing = [str(r) for r in refs if not self._entry(r)]
        if missing:
            raise InputError(f"{', '.join(missing)}: not in {self.path}")
        return [self.image(r) for r in refs]

    def image(self, ref: Reference) -> Image:
        entry = self._entry(ref)
        if entry is None:
            raise InputError(f"{ref}: not in {self.path}")
        return self._image(entry)

    def _entry(self, ref: Reference) -> Entry | None:
        for entry in self.metadata.entries:
            if entry.reference.image_name == ref.image_name or (
                    ref.digest and entry.manifest.digest == ref.digest
                    and entry.reference.name == ref.name):
                return entry
        return None

    def _docs(self) -> dict[str, bytes]:
        if self._documents is None:
            wanted = {e.manifest.digest for e in self.metadata.entries}
            wanted |= {e.config_digest for e in self.metadata.entries}
            self._documents = read_documents(self.path, wanted, self.frames)
        return self._documents

    def _image(self, entry: Entry) -> Image:
        return image_of(entry, self._docs(), self._opener)

    def _opener(self, d: Descriptor, what: str) -> Callable[[], BinaryIO]:
        def open_layer() -> BinaryIO:
            raw = open_blob(self.path, d.digest, self.frames)
            return VerifyingReader(raw, d.digest, d.size,  # type: ignore[return-value]
                                   f"{what}: {archive.blob_path(d.digest)}")
        return open_layer
