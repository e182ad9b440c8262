"""`bundler verify`: prove a bundle is whole, in one streaming pass, with no network.

Reads what archive.py writes. Every byte is accounted for: the compressed file against the
checksum files beside it, every zstd frame against K3s's window limit, every tar member
against the layout, every blob against its name, every layer (decompressed) against its
config's diff_id, and index.json, manifest.json and repositories against each other and the
checksum manifest. Memory stays flat: blobs are hashed as they stream; only small JSON
documents (manifests, configs, metadata) are kept.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from bundler import archive, compress, layer, platform, reference
from bundler.checksums import read_sums
from bundler.digest import CHUNK, DIGEST_RE
from bundler.errors import BundlerError, InputError
from bundler.image import parse_config, parse_manifest
from bundler.platform import Platform
from bundler.tarstream import DIRECTORY, REGULAR, TarError, TarStream

# Metadata members and JSON blobs are small; a larger one is refused, not buffered.
MAX_METADATA = 4 << 20
# All JSON documents kept together; a bundle of three images needs a few hundred KiB.
MAX_KEPT = 64 << 20
_BLOB_RE = re.compile(r"^blobs/sha256/([a-f0-9]{64})$")
_DIRS = {"blobs", "blobs/sha256"}
BUNDLE_SUFFIX = ".tar.zst"


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

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict:
        return {"file": self.file, "ok": self.ok, "size": self.size, "sha256": self.sha256,
                "images": self.images, "blobs": self.blobs,
                "checkedAgainst": self.checked_against, "problems": self.problems,
                "notes": self.notes}


@dataclass
class _Blob:
    size: int
    content_digest: str  # sha256 of the decompressed content (= the blob's for plain blobs)
    data: bytes | None  # kept when small enough to be a manifest or config


def verify(bundle: str | Path, manifest: str | Path | None = None) -> Report:
    """Verify `bundle`; InputError if it (or a given --manifest) cannot be read at all."""
    path = Path(bundle)
    report = Report(str(path))
    doc = _checksum_manifest(path, manifest, report)
    sums = _sums_beside(path, report)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        _check_frames(f, report)
        f.seek(0)
        content = _Content(report)
        outer = hashlib.sha256()
        raw = layer.Tee(f, outer.update)
        content.stream(raw)
        layer.drain(raw)  # the outer checksum covers the whole file, even past a break
        report.size = f.tell()
    report.sha256 = outer.hexdigest()
    _check_outer(path, report, doc, sums)
    if content.complete:
        want = _expected_platform(doc, report)
        content.cross_check(want)
        if doc is not None:
            _against_manifest(doc, content, report)
    return report


def _checksum_manifest(path: Path, given: str | Path | None, report: Report) -> dict | None:
    candidate = Path(given) if given else path.with_name(_stem(path) + ".manifest.json")
    try:
        text = candidate.read_text(encoding="utf-8")
    except FileNotFoundError:
        if given:
            raise InputError(f"{candidate}: no such checksum manifest") from None
        return None
    except OSError as e:
        raise InputError(f"{candidate}: cannot read ({e.strerror})") from None
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 1:
            raise ValueError("not a bundler checksum manifest (schemaVersion 1)")
    except ValueError as e:
        raise InputError(f"{candidate}: {e}") from None
    report.checked_against.append(str(candidate))
    return doc


def _sums_beside(path: Path, report: Report) -> dict[str, str]:
    found = {}
    for sums in sorted(path.parent.glob("sha256sum-*.txt")):
        entries = read_sums(sums)
        if path.name in entries:
            found[str(sums)] = entries[path.name]
            report.checked_against.append(str(sums))
    return found


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(BUNDLE_SUFFIX)] if name.endswith(BUNDLE_SUFFIX) else path.stem


def _check_frames(f: BinaryIO, report: Report) -> None:
    try:
        for frame in compress.frames(_Seeking(f)):
            if frame.window_size > compress.MAX_WINDOW:
                report.problems.append(
                    f"zstd frame at byte {frame.offset}: window of {frame.window_size} bytes "
                    f"exceeds 2^{compress.WINDOW_LOG}, the most K3s decodes")
    except compress.FrameError as e:
        report.problems.append(f"zstd: {e}")


class _Seeking:
    """Lets compress.frames skip block contents by seeking instead of reading them."""

    def __init__(self, f: BinaryIO):
        self._f = f

    def read(self, n: int) -> bytes:
        if n > 4096:
            here = self._f.tell()
            end = self._f.seek(0, 2)
            self._f.seek(min(here + n, end))
            return b"\0" * (min(here + n, end) - here)
        return self._f.read(n)


def _check_outer(path: Path, report: Report, doc: dict | None, sums: dict[str, str]) -> None:
    for source, hex_digest in sums.items():
        if hex_digest != report.sha256:
            report.problems.append(
                f"{path.name}: sha256 is {report.sha256}, {Path(source).name} says {hex_digest}")
    if doc is not None:
        recorded = doc.get("bundle") or {}
        if recorded.get("sha256") != report.sha256 or recorded.get("size") != report.size:
            report.problems.append(
                f"{path.name}: {report.size} bytes with sha256 {report.sha256}, the checksum "
                f"manifest says {recorded.get('size')} bytes with sha256 {recorded.get('sha256')}")
    if doc is None and not sums:
        report.notes.append(f"no checksum file beside {path.name}: checked its content only")


class _Content:
    """Collects what the tar holds while it streams, then cross-checks it."""

    def __init__(self, report: Report):
        self.report = report
        self.metadata: dict[str, bytes] = {}
        self.blobs: dict[str, _Blob] = {}
        self.seen: set[str] = set()
        self.complete = False
        self._kept = 0  # bytes of JSON blobs kept

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    def stream(self, raw: BinaryIO) -> None:
        """Read the whole tar; when the stream itself breaks, `complete` stays False and
        nothing is cross-checked: what follows a break would only repeat it."""
        dctx = zstandard.ZstdDecompressor(max_window_size=compress.MAX_WINDOW)
        plain = dctx.stream_reader(raw, read_size=CHUNK, read_across_frames=True)
        tar = TarStream(plain)
        try:
            for member in tar:
                self._member(member, tar)
        except TarError as e:
            self.problem(f"tar: {e}")
            return
        except zstandard.ZstdError as e:
            if not any(p.startswith("zstd") for p in self.report.problems):
                self.problem(f"zstd: cannot decode ({e})")
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
        m = _BLOB_RE.match(name)
        if not m:
            self.problem(f"{where}: unexpected member")
            return
        self._blob(name, "sha256:" + m.group(1), member.size, tar)

    def _blob(self, name: str, digest: str, size: int, tar: TarStream) -> None:
        own = hashlib.sha256()
        # Only JSON documents (manifests, configs) are kept for the cross-checks, and only so
        # many of them: memory must not grow with the bundle.
        keep = size <= MAX_METADATA and self._kept + size <= MAX_KEPT
        data = _MemberReader(tar, [] if keep else None)
        head = layer.Peek(layer.Tee(data, own.update))
        if not head.head.lstrip().startswith(b"{"):
            data.keep = None
        if layer.is_compressed(head.head):
            try:
                content_digest = layer.uncompressed_digest(head, name)
            except BundlerError as e:
                self.problem(str(e))
                content_digest = "undecodable"
        else:
            layer.drain(head)
            content_digest = "sha256:" + own.hexdigest()
        actual = "sha256:" + own.hexdigest()
        if actual != digest:
            self.problem(f"{name}: content hashes to {actual}")
        kept = b"".join(data.keep) if data.keep is not None else None
        self._kept += len(kept or b"")
        self.blobs[digest] = _Blob(size, content_digest, kept)
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
        name = (entry.get("annotations") or {}).get(archive.ANNOTATION_IMAGE_NAME)
        try:
            ref = reference.parse(name or "")
            if ref.image_name != name:
                raise InputError(f"not a full name (want {ref.image_name})")
        except InputError as e:
            self.problem(f"{where}: {archive.ANNOTATION_IMAGE_NAME} {name!r}: {e}")
            return None
        manifest = self._document(entry, f"{where} ({name}): manifest", referenced)
        if manifest is None:
            return None
        try:
            config_desc, layer_descs = parse_manifest(manifest, f"{name}: manifest")
        except BundlerError as e:
            self.problem(str(e))
            return None
        config = self._document(
            {"digest": config_desc.digest, "size": config_desc.size}, f"{name}: config",
            referenced)
        if config is None:
            return None
        try:
            have, diff_ids = parse_config(config, len(layer_descs), f"{name}: config")
        except BundlerError as e:
            self.problem(str(e))
            return None
        if want and not platform.matches(want, have):
            self.problem(f"{name}: config says {have}, the bundle is {want}")
        declared = platform.of(entry.get("platform") or {})
        if entry.get("platform") and declared != have:
            self.problem(f"{where}: platform {declared} but the config says {have}")
        for n, (desc, diff_id) in enumerate(zip(layer_descs, diff_ids, strict=True)):
            self._layer(f"{name}: layer {n} ({archive.blob_path(desc.digest)})", desc, diff_id,
                        referenced)
        return {"name": name, "ref": ref, "config": config_desc.digest,
                "layers": [d.digest for d in layer_descs], "manifest": entry.get("digest"),
                "platform": have}

    def _document(self, desc: dict, what: str, referenced: set[str]) -> bytes | None:
        digest, size = desc.get("digest"), desc.get("size")
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            self.problem(f"{what}: bad digest {digest!r}")
            return None
        referenced.add(digest)
        blob = self.blobs.get(digest)
        if blob is None:
            self.problem(f"{what}: {archive.blob_path(digest)} is missing")
            return None
        if blob.size != size:
            self.problem(f"{what}: {archive.blob_path(digest)} is {blob.size} bytes, "
                         f"descriptor says {size}")
        if blob.data is None:
            self.problem(f"{what}: {archive.blob_path(digest)} is too large for a document")
        return blob.data

    def _layer(self, what: str, desc, diff_id: str, referenced: set[str]) -> None:
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

    def _docker_views(self, images: list[dict]) -> None:
        docker = _json(self.metadata.get(archive.DOCKER_MANIFEST, b"[]"),
                       archive.DOCKER_MANIFEST, self)
        want = [{"Config": archive.blob_path(img["config"]),
                 "RepoTags": [img["ref"].tagged_name] if img["ref"].tag else [],
                 "Layers": [archive.blob_path(d) for d in img["layers"]]} for img in images]
        if not isinstance(docker, list) or len(docker) != len(want):
            self.problem(f"{archive.DOCKER_MANIFEST}: does not list the {len(want)} images of "
                         f"{archive.INDEX}")
        else:
            for i, (have, expected) in enumerate(zip(docker, want, strict=True)):
                if have != expected:
                    self.problem(f"{archive.DOCKER_MANIFEST}: entry {i} disagrees with "
                                 f"{archive.INDEX} ({images[i]['name']})")
        repos = _json(self.metadata.get(archive.REPOSITORIES, b"{}"), archive.REPOSITORIES, self)
        expected_repos: dict[str, dict[str, str]] = {}
        for img in images:
            if img["ref"].tag:
                expected_repos.setdefault(img["ref"].name, {})[img["ref"].tag] = \
                    img["config"].split(":", 1)[1]
        if repos != expected_repos:
            self.problem(f"{archive.REPOSITORIES}: disagrees with {archive.INDEX}")


class _MemberReader:
    """A member's data as a stream, optionally keeping a copy (for small JSON blobs)."""

    def __init__(self, tar: TarStream, keep: list[bytes] | None):
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


def _json(data: bytes, what: str, content: _Content) -> object:
    try:
        return json.loads(data)
    except ValueError as e:
        content.problem(f"{what}: not JSON ({e})")
        return None


def _expected_platform(doc: dict | None, report: Report) -> Platform | None:
    if doc and isinstance(doc.get("arch"), str):
        try:
            return platform.for_arch(doc["arch"])
        except InputError:
            report.problems.append(f"checksum manifest: bad arch {doc['arch']!r}")
    return None


def _against_manifest(doc: dict, content: _Content, report: Report) -> None:
    recorded = doc.get("images")
    if not isinstance(recorded, list):
        report.problems.append("checksum manifest: no images list")
        return
    index = _json(content.metadata.get(archive.INDEX, b"{}"), archive.INDEX, content)
    entries = {}
    for e in (index or {}).get("manifests") or []:
        if isinstance(e, dict):
            entries[(e.get("annotations") or {}).get(archive.ANNOTATION_IMAGE_NAME)] = e
    seen = set()
    for item in recorded:
        if not isinstance(item, dict):
            report.problems.append("checksum manifest: an image entry is not an object")
            continue
        try:
            name = reference.parse(str(item.get("reference", ""))).image_name
        except InputError as e:
            report.problems.append(f"checksum manifest: {e}")
            continue
        seen.add(name)
        entry = entries.get(name)
        if entry is None:
            report.problems.append(f"{name}: in the checksum manifest but not in the bundle")
            continue
        if entry.get("digest") != item.get("manifestDigest"):
            report.problems.append(f"{name}: manifest digest {entry.get('digest')}, checksum "
                                   f"manifest says {item.get('manifestDigest')}")
            continue
        manifest = content.blobs.get(entry.get("digest"))
        if manifest is None or manifest.data is None:
            continue
        try:
            config, layer_descs = parse_manifest(manifest.data, name)
        except BundlerError:
            continue
        if config.digest != item.get("configDigest"):
            report.problems.append(f"{name}: config digest {config.digest}, checksum manifest "
                                   f"says {item.get('configDigest')}")
        have = [{"digest": d.digest, "size": d.size} for d in layer_descs]
        said = [{"digest": x.get("digest"), "size": x.get("size")} for x in
                item.get("layers") or [] if isinstance(x, dict)]
        if have != said:
            report.problems.append(f"{name}: layers differ from the checksum manifest")
    for name in sorted(set(entries) - seen):
        report.problems.append(f"{name}: in the bundle but not in the checksum manifest")
