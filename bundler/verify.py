"""`bundler verify`: prove a bundle is whole, in one streaming pass, with no network.

Reads what archive.py writes. Every byte is accounted for: the compressed file against the
checksum files beside it, every zstd frame against K3s's window limit, every tar member
against the layout, every blob against its name, every layer (decompressed) against its
config's diff_id, manifest.json and repositories against what archive.py writes for the
images index.json names (the layout rules live there only), and the images against the
checksum manifest (checksums.py reads and compares those files, as it writes them). Memory
stays flat: blobs are hashed as they stream; only small JSON documents (manifests, configs,
metadata) are kept. push streams a bundle through this same
pass, taking each blob's bytes through on_blob.

Everything in a bundle may be hostile. JSON is read as Go reads it (strictjson), the tar as
Go's archive/tar reads it (tarstream), and the work is bounded: each distinct manifest is
checked once however often index.json names it, the bytes decompressed (the tar and the
layers inside it) may not exceed `max_inflation` times the file's size, and a bundle may hold
at most MAX_MEMBERS members.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from bundler import (
    archive,
    checksums,
    compress,
    layer,
    localfile,
    mediatypes,
    platform,
    reference,
    strictjson,
)
from bundler.digest import CHUNK, hash_rest
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
from bundler.readahead import AheadReader
from bundler.strictjson import object_or_empty, shown
from bundler.tarstream import DIRECTORY, REGULAR, TarError, TarStream

# Metadata members and JSON blobs are small; a larger one is refused, not buffered.
MAX_METADATA = 4 << 20
# All JSON documents kept together; a bundle of three images needs a few hundred KiB.
MAX_KEPT = 16 << 20
# Ours has a few hundred members; 100,000 keeps verify's bookkeeping in tens of MiB.
MAX_MEMBERS = 100_000
# A bundle may decompress (tar, then the layers in it) to this many times its own size, and
# always to INFLATION_FLOOR. Real bundles: ~4x (uncompressed layers), ~5x (gzip layers inside).
DEFAULT_MAX_INFLATION = 100
INFLATION_FLOOR = 1 << 30
# The decompressed tar is handed on in pieces of this size: big enough that zstd, sha256 and
# zlib release the GIL on each, small enough that the few alive at once stay a few hundred KiB
# and that glibc serves them from its heap: 256 KiB pieces went to mmap, and faulting their
# pages in again and again cost 5x the page faults and a fifth of verify's CPU.
STREAM_PIECE = 128 << 10
# Problems kept in a report; the rest are counted (a hostile bundle can make millions).
MAX_PROBLEMS_KEPT = 1000
_BLOB_RE = re.compile(r"blobs/sha256/([a-f0-9]{64})")
_DIRS = {"blobs", "blobs/sha256"}


@dataclass
class Report:
    """What verify found; ok when there are no problems."""

    file: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    blobs: int = 0
    size: int = 0
    sha256: str = ""
    checked_against: list[str] = field(default_factory=list)
    problem_count: int = 0  # problems found, kept or not
    inflation_limited: bool = False  # stopped at the inflation limit
    # The small JSON blobs (manifests, configs) verify kept, by digest (one that does not
    # hash to it is a problem above): when ok, a caller (push) builds the images from them
    # without reading the bundle again.
    documents: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0 and not self.problems

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(text)

    def as_json(self) -> dict:
        return {"file": self.file, "ok": self.ok, "size": self.size, "sha256": self.sha256,
                "images": self.images, "blobs": self.blobs,
                "checkedAgainst": self.checked_against, "problems": self.problems,
                "problemCount": self.problem_count, "notes": self.notes}


@dataclass
class _Blob:
    size: int
    content_digest: str  # sha256 of the decompressed content (= the blob's for plain blobs)
    data: bytes | None  # kept when small enough to be a manifest or config
    compression: str = "plain"  # "gzip", "zstd" or "plain", as sniffed
    tar_head: bytes = b""  # the first 512 bytes of the content, decompressed


# What containerd unpacks each layer media type with; anything else it cannot unpack.
_LAYER_COMPRESSION = {mediatypes.OCI_LAYER: "plain", mediatypes.DOCKER_LAYER: "plain",
                      mediatypes.OCI_LAYER_GZIP: "gzip", mediatypes.DOCKER_LAYER_GZIP: "gzip",
                      mediatypes.OCI_LAYER_ZSTD: "zstd"}


class BlobWriter(Protocol):
    """Where on_blob sends one blob's bytes as verify streams them."""

    def write(self, data: bytes) -> object: ...

    def close(self) -> None: ...


class InflationLimit(BundlerError):
    """The bundle decompresses to more than verify was allowed to read."""


class _Budget:
    """Counts decompressed bytes against the inflation limit."""

    def __init__(self, limit: int, file: str):
        self.limit = limit
        self.left = limit
        self._file = file

    def spend(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left < 0:
            raise InflationLimit(f"{self._file}: decompresses to more than {self.limit} bytes, "
                                 "the inflation limit; stopped reading")


def verify(bundle: str | Path, manifest: str | Path | None = None, *,
           require_checksum: bool = False,
           max_inflation: float = DEFAULT_MAX_INFLATION,
           key: str | Path | None = None,
           on_blob: Callable[[str, int], BlobWriter | None] | None = None) -> Report:
    """Verify `bundle`; InputError if it (or a given checksum manifest) cannot be read at all.

    `require_checksum`: a bundle no checksum file vouches for fails. `max_inflation`: how many
    times its own size the bundle may decompress to (tar plus layers), at least
    INFLATION_FLOOR bytes; past that verify stops and fails. `key`: a public key the checksum
    manifest must be signed with (signing.SignatureInvalid otherwise); the bundle is then
    checked against exactly the bytes the signature covers. `on_blob(digest, size)`: called
    as each blob member starts; the bytes of the blob are also written to the writer it
    returns (if any) as verify reads them, and the writer is closed when the member ends,
    whether or not it was whole (the writer checks what it got; the report says why not).
    """
    path = Path(bundle)
    if path.name in ("", ".", ".."):
        raise InputError(f"{str(bundle)!r}: not a bundle file")
    report = Report(str(path))
    doc = None
    if found := checksums.read_manifest(path, manifest, key):
        doc, read_from = found
        report.checked_against.append(str(read_from))
    sums = checksums.sums_beside(path)
    report.checked_against += sums
    try:
        f = localfile.open_regular(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        budget = _Budget(max(int(size * max_inflation), INFLATION_FLOOR), path.name)
        content = _Content(report, budget, on_blob)
        if _check_format(f, path, report):
            _check_frames(f, report)
            f.seek(0)
            outer = hashlib.sha256()
            raw = layer.Tee(f, outer.update)
            content.stream(raw)
            layer.drain(raw)  # the outer checksum covers the whole file, even past a break
        else:
            f.seek(0)
            outer = hash_rest(f)
        report.size = f.tell()
    report.sha256 = outer.hexdigest()
    report.documents = {d: b.data for d, b in content.blobs.items() if b.data is not None}
    problems, notes = checksums.check_file(path, report.size, report.sha256, doc, sums,
                                           require_checksum=require_checksum)
    for text in problems:
        report.problem(text)
    report.notes += notes
    if content.complete:
        try:
            want = checksums.platform_of(doc)
        except InputError as e:
            report.problem(str(e))
            want = None
        content.cross_check(want)
        if doc is not None:
            for text in checksums.check_images(doc, content.index_digests(),
                                               content.layers_of):
                report.problem(text)
    return report


def _check_format(f: BinaryIO, path: Path, report: Report) -> bool:
    """Whether the file is zstd at all; if not, one problem that says what it is instead."""
    head = f.read(512)
    f.seek(0)
    if head.startswith(layer.ZSTD_MAGIC) or head and layer.ZSTD_MAGIC.startswith(head):
        return True  # (the second: cut off inside the magic; the frame walk says so)
    if not head:
        report.problem(f"{path.name}: empty file, not a bundle")
    elif head[257:262] == b"ustar":
        report.problem(f"{path.name}: a plain tar, not zstd-compressed (a bundle is a .tar.zst)")
    elif head.startswith(layer.GZIP_MAGIC):
        report.problem(f"{path.name}: gzip-compressed, not zstd (a bundle is a .tar.zst)")
    else:
        report.problem(f"{path.name}: not a zstd file (a bundle is a .tar.zst)")
    return False


def _check_frames(f: BinaryIO, report: Report) -> None:
    try:
        for frame in compress.frames(compress.Seeking(f)):
            if frame.window_size > compress.MAX_WINDOW:
                report.problem(
                    f"zstd frame at byte {frame.offset}: window of {frame.window_size} bytes "
                    f"exceeds 2^{compress.WINDOW_LOG}, the most K3s decodes")
    except compress.FrameError as e:
        report.problem(f"zstd: {e}")


class _Content:
    """Collects what the tar holds while it streams, then cross-checks it."""

    def __init__(self, report: Report, budget: _Budget,
                 on_blob: Callable[[str, int], BlobWriter | None] | None = None):
        self.report = report
        self.budget = budget
        self._on_blob = on_blob
        self.metadata: dict[str, bytes] = {}
        self.blobs: dict[str, _Blob] = {}
        self.seen: set[str] = set()
        self.complete = False
        self._kept = 0  # bytes of JSON blobs kept
        self._members = 0
        self._checked: dict[tuple, dict | None] = {}  # manifests checked once
        self._good: dict[str, dict] | None = None  # of those read whole, by digest
        self._names: set[str] = set()

    def problem(self, text: str) -> None:
        self.report.problem(text)

    def stream(self, raw: BinaryIO) -> None:
        """Read the whole tar; when the stream itself breaks, `complete` stays False and
        nothing is cross-checked: what follows a break would only repeat it."""
        dctx = zstandard.ZstdDecompressor(max_window_size=compress.MAX_WINDOW)
        # Read, hashed and decompressed on a thread of its own, overlapping the member checks.
        # One piece ahead is enough to overlap the two cores. Every piece in flight is memory
        # on top of zstd's window: compact stand-ins, in-process peak, 58.4 MiB with 1 MiB
        # pieces and 1 MiB compressed reads, 53.0 with STREAM_PIECE and zstd's own read size
        # (53.6 with no read-ahead and 1 MiB pieces); above the imports that is 33 MiB, the
        # Python floor's 35.8 (it reads 1 MiB at a time).
        plain = AheadReader(dctx.stream_reader(raw, read_across_frames=True), "verify-read",
                            depth=1, chunk=STREAM_PIECE)
        tar = TarStream(layer.Tee(plain, self.budget.spend), chunk=STREAM_PIECE)
        try:
            self._members_of(tar)
        finally:
            plain.stop()  # before verify() reads the rest of the file for its checksum

    def _members_of(self, tar: TarStream) -> None:
        try:
            for member in tar:
                self._members += 1
                if self._members > MAX_MEMBERS:
                    raise BundlerError(f"tar: more than {MAX_MEMBERS} members; not a bundle "
                                       f"bundler can check (byte {member.offset})")
                self._member(member, tar)
        except TarError as e:
            self.problem(f"tar: {e}")
            return
        except zstandard.ZstdError as e:
            if not any(p.startswith("zstd") for p in self.report.problems):
                self.problem(f"zstd: cannot decode ({e})")
            return
        except InflationLimit as e:
            self.report.inflation_limited = True
            self.problem(str(e))
            return
        except BundlerError as e:
            self.problem(str(e))
            return
        self.complete = True

    def _member(self, member, tar: TarStream) -> None:
        name = member.name[2:] if member.name.startswith("./") else member.name
        name = name.rstrip("/") if member.kind == DIRECTORY else name
        where = f"member {member.name!r} (tar byte {member.offset})"
        if name.startswith("/"):
            self.problem(f"{where}: absolute name")
            return
        if ".." in name.split("/"):
            self.problem(f"{where}: name climbs out with '..'")
            return
        if posixpath.normpath(name) != name:
            # containerd cleans names (path.Clean) before matching them; we compare them as
            # written, so a name cleaning would change could be two names to the two readers.
            self.problem(f"{where}: not a clean path")
            return
        if name in self.seen:
            self.problem(f"{where}: duplicate of an earlier member")
            return
        self.seen.add(name)
        if member.kind == DIRECTORY:
            if name not in _DIRS:
                self.problem(f"{where}: unexpected directory")
            return
        if member.kind != REGULAR:
            self.problem(f"{where}: {member.kind} not allowed in a bundle")
            return
        if name in archive.METADATA:
            self.metadata[name] = _read_capped(tar, member.size, where)
            return
        m = _BLOB_RE.fullmatch(name)
        if not m:
            self.problem(f"{where}: unexpected member")
            return
        digest = "sha256:" + m.group(1)
        writer = self._on_blob(digest, member.size) if self._on_blob else None
        if writer is None:
            self._blob(name, digest, member.size, tar)
            return
        try:
            self._blob(name, digest, member.size, _TeeTar(tar, writer))
        finally:
            writer.close()

    def _blob(self, name: str, digest: str, size: int, tar: TarStream | _TeeTar) -> None:
        own = hashlib.sha256()
        # Only JSON documents (manifests, configs) are kept for the cross-checks, and only so
        # many of them: memory must not grow with the bundle.
        keep = size <= MAX_METADATA and self._kept + size <= MAX_KEPT
        data = _MemberReader(tar, [] if keep else None)
        head = layer.Peek(layer.Tee(data, own.update))
        if not head.head.lstrip().startswith(b"{"):
            data.keep = None
        first = _First(512)
        if layer.is_compressed(head.head):
            try:
                content_digest = layer.uncompressed_digest(
                    head, name, lambda chunk: (self.budget.spend(chunk), first.update(chunk)))
            except InflationLimit:
                raise
            except BundlerError as e:
                self.problem(str(e))
                content_digest = "undecodable"
        else:
            layer.drain(layer.Tee(head, first.update))
            content_digest = "sha256:" + own.hexdigest()
        actual = "sha256:" + own.hexdigest()
        if actual != digest:
            self.problem(f"{name}: content hashes to {actual}")
        kept = b"".join(data.keep) if data.keep is not None else None
        self._kept += len(kept or b"")
        self.blobs[digest] = _Blob(size, content_digest, kept, layer.compression(head.head),
                                   first.data)
        self.report.blobs += 1

    # -- after the stream --------------------------------------------------------------

    def cross_check(self, want: Platform | None) -> None:
        for name in archive.METADATA:
            if name not in self.metadata:
                self.problem(f"{name}: missing")
        if any(name not in self.metadata for name in (archive.OCI_LAYOUT, archive.INDEX)):
            return
        layout = _json(self.metadata[archive.OCI_LAYOUT], archive.OCI_LAYOUT, self)
        if layout != {"imageLayoutVersion": "1.0.0"}:
            self.problem(f"{archive.OCI_LAYOUT}: not an OCI layout 1.0.0 marker")
        referenced: set[str] = set()
        index = _json(self.metadata[archive.INDEX], archive.INDEX, self)
        entries = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(entries, list) or not entries:
            self.problem(f"{archive.INDEX}: lists no manifests")
            return
        images = []
        for i, entry in enumerate(entries):
            images.append(self._image(i, entry, want, referenced))
            # Without a checksum manifest the first image sets the platform for the rest.
            want = want or (images[-1] or {}).get("platform")
        self.report.images = [img["name"] for img in images if img]
        if all(images):
            self._docker_views(images)
        for digest in sorted(set(self.blobs) - referenced):
            self.problem(f"{archive.blob_path(digest)}: not referenced by any image")

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
                self.problem(f"{where}: platform {_platform_of(declared)} but the config says "
                             f"{have}")
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
                                      self))
        entries: dict[str, object] = {}
        manifests = index.get("manifests")
        for e in manifests if isinstance(manifests, list) else []:
            name = object_or_empty(object_or_empty(e).get("annotations")).get(
                archive.ANNOTATION_IMAGE_NAME)
            if isinstance(name, str):
                entries[name] = e.get("digest")
        return entries

    def layers_of(self, digest: str) -> tuple[str, list[dict]] | None:
        """(config digest, [{digest, size}] of the layers) of a manifest cross_check read
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
                       archive.DOCKER_MANIFEST, self)
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
        repos = _json(self.metadata.get(archive.REPOSITORIES, b"{}"), archive.REPOSITORIES, self)
        if repos != json.loads(archive.repositories_json([img["image"] for img in images])):
            self.problem(f"{archive.REPOSITORIES}: disagrees with {archive.INDEX}")


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


class _First:
    """Keeps the first `n` bytes handed to update()."""

    def __init__(self, n: int):
        self._n = n
        self.data = b""

    def update(self, chunk: bytes) -> None:
        if len(self.data) < self._n:
            self.data += chunk[: self._n - len(self.data)]


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


class _TeeTar:
    """A TarStream whose member data also goes to an on_blob writer."""

    def __init__(self, tar: TarStream, writer: BlobWriter):
        self._tar, self._writer = tar, writer

    def read_data(self, n: int = CHUNK) -> bytes:
        data = self._tar.read_data(n)
        if data:
            self._writer.write(data)
        return data


class _MemberReader:
    """A member's data as a stream, optionally keeping a copy (for small JSON blobs)."""

    def __init__(self, tar: TarStream | _TeeTar, keep: list[bytes] | None):
        self._tar = tar
        self.keep = keep

    def read(self, n: int = CHUNK) -> bytes:
        data = self._tar.read_data(n)
        if self.keep is not None and data:
            self.keep.append(data)
        return data


def _read_capped(tar: TarStream, size: int, where: str) -> bytes:
    if size > MAX_METADATA:
        raise BundlerError(f"{where}: {size} bytes of metadata, more than {MAX_METADATA}")
    return b"".join(iter(lambda: tar.read_data(), b""))


_SCHEMAS = {archive.OCI_LAYOUT: strictjson.OCI_LAYOUT, archive.INDEX: strictjson.INDEX,
            archive.DOCKER_MANIFEST: strictjson.DOCKER_MANIFEST}


def _json(data: bytes, what: str, content: _Content) -> object:
    try:
        return strictjson.loads(data, _SCHEMAS.get(what))
    except strictjson.StrictJSONError as e:
        content.problem(f"{what}: bad JSON ({e})")
        return None


def _platform_of(obj: dict) -> Platform | str:
    fields = [obj.get(key) or "" for key in ("os", "architecture", "variant")]
    if not all(isinstance(f, str) for f in fields):
        return "(not strings)"
    return Platform(fields[0], fields[1], fields[2] or None)
