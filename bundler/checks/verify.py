"""`bundler verify`: prove a bundle is whole, in one streaming pass, with no network.

Reads what archive.py writes. Every byte is accounted for: the compressed file against the
checksum files beside it, every zstd frame against K3s's window limit, every tar member
against the layout, every blob against its name, every layer (decompressed) against its
config's diff_id, manifest.json and repositories against what archive.py writes for the
images index.json names, and the images against the checksum manifest. This module streams
the bundle and checks its members; layout.py checks what they hold as an image layout, and
checksums.py reads and compares the checksum files (as it writes them). Memory stays flat:
blobs are hashed as they stream; only small JSON documents (manifests, configs, metadata) are
kept. push streams a bundle through this same pass, taking each blob's bytes through on_blob.

Everything in a bundle may be hostile. JSON is read as Go reads it (strictjson), the tar as
Go's archive/tar reads it (tarstream), and the work is bounded: each distinct manifest is
checked once however often index.json names it, the bytes decompressed (the tar and the
layers inside it) may not exceed `max_inflation` times the file's size, and a bundle may hold
at most MAX_MEMBERS members.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from bundler import decompress, localfile
from bundler.bundleformat import archive, checksums, compress
from bundler.checks.layout import Blob, Layout
from bundler.digest import CHUNK
from bundler.errors import BundlerError, InputError
from bundler.readahead import AheadReader, Pipe
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
    warnings: list[str] = field(default_factory=list)  # fail nothing: bundles of older writers
    images: list[str] = field(default_factory=list)
    blobs: int = 0
    # None for a file that is not zstd: verify says nothing about the content of a file
    # that is not a bundle.
    size: int | None = None
    sha256: str | None = None
    checked_against: list[str] = field(default_factory=list)
    # With --key: the public key the checksum manifest's signature was checked with, and its
    # fingerprint (signing.key_fingerprint).
    signed_by: tuple[str, str] | None = None
    problem_count: int = 0  # problems found, kept or not
    inflation_limited: bool = False  # stopped at the inflation limit
    # The small JSON blobs (manifests, configs) verify kept, by digest (one that does not
    # hash to it is a problem above): when ok, a caller (push) builds the images from them
    # without reading the bundle again.
    documents: dict[str, bytes] = field(default_factory=dict, repr=False)
    # The blob members' bytes, and what they unpack to (a compressed layer decompressed, any
    # other blob as it is): what an import stores, place's estimate of containerd's need.
    blob_bytes: int = 0
    unpacked_bytes: int = 0

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
                "problemCount": self.problem_count, "notes": self.notes,
                "warnings": self.warnings,
                "signedBy": self.signed_by and {"key": self.signed_by[0],
                                                "fingerprint": self.signed_by[1]}}


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


def _vouchers(report: Report, path: Path, manifest: str | Path | None,
              key: str | Path | None, allow_rename: bool, not_before: datetime | None
              ) -> dict | None:
    """The checksum manifest (and with `key`, its signature, name and date), checked before
    the bundle is read; recorded in `report` as what the bundle was checked against."""
    doc, read_from = None, None
    if found := checksums.read_manifest(path, manifest, key):
        doc, read_from = found
        report.checked_against.append(str(read_from))
        if key is not None and not allow_rename:
            checksums.check_signed_name(doc, path)
        if key is not None:
            from bundler.bundleformat import signing

            report.signed_by = (str(key), signing.key_fingerprint(key))
    if not_before is not None:
        checksums.check_not_before(doc, str(read_from or path), not_before)
    return doc


def verify(bundle: str | Path, manifest: str | Path | None = None, *,
           require_checksum: bool = False,
           max_inflation: float = DEFAULT_MAX_INFLATION,
           key: str | Path | None = None, allow_rename: bool = False,
           not_before: datetime | None = None,
           on_blob: Callable[[str, int], BlobWriter | None] | None = None,
           opened: BinaryIO | None = None) -> Report:
    """Verify `bundle`; InputError if it (or a given checksum manifest) cannot be read at all.

    `require_checksum`: a bundle no checksum file vouches for fails. `max_inflation`: how many
    times its own size the bundle may decompress to (tar plus layers), at least
    INFLATION_FLOOR bytes; past that verify stops and fails. `key`: a public key the checksum
    manifest must be signed with (signing.SignatureInvalid otherwise); the bundle is then
    checked against exactly the bytes the signature covers, and under the name it was signed
    for (checksums.RenamedBundle otherwise, unless `allow_rename`). `not_before`: the checksum
    manifest must record a build date (sourceDateEpoch) at or after it (checksums.TooOld
    otherwise); it proves something only with `key`. Both are checked before the bundle is
    read. A file that is not zstd is one problem and nothing else: its size and sha256 are
    not reported (it may be a file the caller can read and should not describe, reached
    through a symlink).
    `on_blob(digest, size)`: called as each blob member starts; the bytes of the blob are
    also written to the writer it returns (if any) as verify reads them, and the writer is
    closed when the member ends, whether or not it was whole (the writer checks what it
    got; the report says why not).
    `opened`: a seekable file to read instead of opening `bundle` (a bundle read from its
    parts, never joined on disk); `bundle` still names it, and the checksum files are looked
    for beside that name. The caller closes it.
    """
    path = Path(bundle)
    if path.name in ("", ".", ".."):
        raise InputError(f"{str(bundle)!r}: not a bundle file")
    report = Report(str(path))
    doc = _vouchers(report, path, manifest, key, allow_rename, not_before)
    sums = checksums.sums_beside(path)
    report.checked_against += sums
    with _open(path, opened) as f:
        if not _check_format(f, path, report):
            return report
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        budget = _Budget(max(int(size * max_inflation), INFLATION_FLOOR), path.name)
        content = _Content(report, budget, on_blob)
        _check_frames(f, report)
        f.seek(0)
        outer = hashlib.sha256()
        raw = decompress.Tee(f, outer.update)
        content.stream(raw)
        decompress.drain(raw)  # the outer checksum covers the whole file, even past a break
        report.size = f.tell()
    report.sha256 = outer.hexdigest()
    _conclude(report, content, path, doc, sums, require_checksum)
    if unimportable := compress.unimportable_name(path.name):
        report.warnings.append(f"{path.name}: K3s will not import it under this name: "
                               f"{unimportable}")
    return report


def _open(path: Path, opened: BinaryIO | None) -> contextlib.AbstractContextManager[BinaryIO]:
    """The bundle at `path`, or `opened` (left open for its caller to close)."""
    if opened is not None:
        return contextlib.nullcontext(opened)
    try:
        return localfile.open_regular(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None


def _conclude(report: Report, content: _Content, path: Path, doc: dict | None,
              sums: dict[str, str], require_checksum: bool) -> None:
    """The checks on what the stream found, once it has ended: the file against the checksum
    files, the members as an image layout, the images against the checksum manifest."""
    report.documents = {d: b.data for d, b in content.blobs.items() if b.data is not None}
    problems, notes = checksums.check_file(path, report.size, report.sha256, doc, sums,
                                           require_checksum=require_checksum)
    for text in problems:
        report.problem(text)
    report.notes += notes
    try:
        checksums.recorded_epoch(doc or {})
    except ValueError as e:
        report.problem(str(e))
    if content.complete:
        try:
            want = checksums.platform_of(doc)
        except InputError as e:
            report.problem(str(e))
            want = None
        # A shared ref.name is a warning, not a problem: bundles of older writers have them.
        found = Layout(content.metadata, content.blobs, report.problem, report.warnings.append)
        report.images = found.check(want)
        if doc is not None:
            for text in checksums.check_images(doc, found.index_digests(), found.layers_of):
                report.problem(text)


class WrittenCheck:
    """verify's checks, run on a bundle while it is written (build's self-check).

    The writer hands over the plain tar in order as it leaves the compressor or the frame
    cache, decompressed from the very bytes written (feed), and at the end the file's size
    and sha256 (finish); the member checks run on a thread of their own, beside the writer,
    and the frames, the file and the layout are checked as verify checks them. So the file is
    decompressed once, not written and then read back: a warm rebuild's frames are already
    decompressed to be compared with what they stand for (compress.copy_checked).

    `diff_ids`: compressed layer blob digest -> the diff_id its image's config gives it. The
    pair is fixed by content (a blob digest, a config digest): whatever a cache holds, the
    blob that hashes to the digest inflates to the same tar, which stage.stage_layer checked
    against the diff_id when the layer was pulled. Such a layer is hashed and looked at as a
    tar (its first block), not inflated whole again: that alone tripled a warm rebuild.
    """

    def __init__(self, name: str, diff_ids: Mapping[str, str] | None = None):
        self.report = Report(name)
        # Our own tar of checked content: no inflation limit.
        self._content = _Content(self.report, _Budget(1 << 62, name), diff_ids=diff_ids)
        self._pipe = Pipe()
        self._fed = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="self-check")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._content.members(self._pipe)
        except BaseException as e:  # noqa: BLE001 - raised by finish(), in the writer's thread
            self._error = e
        finally:
            self._pipe.stop()

    def feed(self, offset: int, data: bytes) -> None:
        """The plain tar's bytes that start at `offset`. Bytes already fed are skipped: a
        cached frame dropped part-way is compressed again, and gives the same bytes again."""
        end = offset + len(data)
        if end <= self._fed:
            return
        if offset > self._fed:
            raise ValueError(f"plain tar fed from byte {offset}, expected {self._fed}")
        self._pipe.write(bytes(data[self._fed - offset:]))
        self._fed = end

    def finish(self, path: Path, size: int, sha256: str, doc: dict) -> Report:
        """The report on the file at `path`, written whole: `size` bytes hashing to `sha256`
        as written, described by `doc`."""
        self._pipe.close()
        self._thread.join()
        if self._error is not None:
            raise self._error
        with localfile.open_regular(path) as f:
            _check_frames(f, self.report)
        self.report.size, self.report.sha256 = size, sha256
        _conclude(self.report, self._content, path, doc, {}, False)
        return self.report

    def abort(self) -> None:
        """The write failed: the checking thread ends, what it found is of no use."""
        self._pipe.close()


def _check_format(f: BinaryIO, path: Path, report: Report) -> bool:
    """Whether the file is zstd at all; if not, one problem that says what kind of file it
    is instead, and nothing more."""
    zstd = _starts_zstd(f)
    f.seek(0)
    if zstd:
        return True
    head = f.read(512)
    if not head:
        report.problem(f"{path.name}: empty file, not a bundle")
    elif head[257:262] == b"ustar":
        report.problem(f"{path.name}: a plain tar, not zstd-compressed (a bundle is a .tar.zst)")
    elif head.startswith(decompress.GZIP_MAGIC):
        report.problem(f"{path.name}: gzip-compressed, not zstd (a bundle is a .tar.zst)")
    else:
        report.problem(f"{path.name}: not a zstd file (a bundle is a .tar.zst)")
    return False


def _starts_zstd(f: BinaryIO) -> bool:
    """Whether `f` starts with a zstd frame, after any skippable frames (at most as many as
    the frame walk allows in all), as the frame walk and containerd take a zstd stream; or
    ends inside that frame's magic (the walk says it is cut off: all it holds is known)."""
    offset = 0
    for _ in range(MAX_MEMBERS + 2):
        f.seek(offset)
        head = f.read(8)
        magic = decompress.ZSTD_MAGIC
        if head.startswith(magic) or head and magic.startswith(head):
            return True
        if len(head) < 8 or decompress.compression(head) != "zstd":  # not a skippable frame
            return False
        offset += 8 + int.from_bytes(head[4:], "little")
    return False


def _check_frames(f: BinaryIO, report: Report) -> None:
    # Skippable frames cost 8 bytes each: uncapped, a bundle of them alone walks for seconds.
    # The same cap as the bundle source's MAX_FRAMES: one frame per member run, plus the
    # metadata frame and the end marker's.
    limit = MAX_MEMBERS + 2
    try:
        for n, frame in enumerate(compress.frames(compress.Seeking(f))):
            if n == limit:
                report.problem(f"zstd: more than {limit} frames (skippable ones counted); "
                               "not a bundle bundler wrote")
                return
            if frame.window_size > compress.MAX_WINDOW:
                report.problem(
                    f"zstd frame at byte {frame.offset}: window of {frame.window_size} bytes "
                    f"exceeds 2^{compress.WINDOW_LOG}, the most K3s decodes")
    except compress.FrameError as e:
        report.problem(f"zstd: {e}")


class _Content:
    """Collects what the tar holds while it streams (layout.Layout checks it after)."""

    def __init__(self, report: Report, budget: _Budget,
                 on_blob: Callable[[str, int], BlobWriter | None] | None = None,
                 diff_ids: Mapping[str, str] | None = None):
        self.report = report
        self.budget = budget
        self._on_blob = on_blob
        self._diff_ids = diff_ids or {}
        self.metadata: dict[str, bytes] = {}
        self.blobs: dict[str, Blob] = {}
        self.seen: set[str] = set()
        self.complete = False
        self._kept = 0  # bytes of JSON blobs kept
        self._members = 0

    def problem(self, text: str) -> None:
        self.report.problem(text)

    def members(self, plain: BinaryIO) -> None:
        """Read the whole plain tar from `plain`, checking each member (as stream does)."""
        self._members_of(TarStream(decompress.Tee(plain, self.budget.spend), chunk=STREAM_PIECE))

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
        tar = TarStream(decompress.Tee(plain, self.budget.spend), chunk=STREAM_PIECE)
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

    def _head_only(self, head: decompress.Peek, name: str, first: _First) -> None:
        """Read a compressed blob to its end, decompressing only its first bytes: a layer
        whose diff_id is already known (WrittenCheck's diff_ids) is still looked at as a tar,
        not inflated whole again."""
        try:
            plain = decompress.decompressed(head, read_size=STREAM_PIECE)
            while len(first.data) < 512 and (chunk := plain.read(512 - len(first.data))):
                first.update(chunk)
        except BundlerError as e:
            self.problem(str(e))
        except (zstandard.ZstdError, zlib.error, EOFError, OSError) as e:
            self.problem(f"{name}: cannot decompress ({e})")
        decompress.drain(head)

    def _blob(self, name: str, digest: str, size: int, tar: TarStream | _TeeTar) -> None:
        own = hashlib.sha256()
        # Only JSON documents (manifests, configs) are kept for the cross-checks, and only so
        # many of them: memory must not grow with the bundle.
        keep = size <= MAX_METADATA and self._kept + size <= MAX_KEPT
        data = _MemberReader(tar, [] if keep else None)
        head = decompress.Peek(decompress.Tee(data, own.update))
        if not head.head.lstrip().startswith(b"{"):
            data.keep = None
        first = _First(512)
        if decompress.is_compressed(head.head) and digest in self._diff_ids:
            content_digest = self._diff_ids[digest]
            self._head_only(head, name, first)
        elif decompress.is_compressed(head.head):
            def inflated(chunk: bytes) -> None:
                self.budget.spend(chunk)
                first.update(chunk)
                self.report.unpacked_bytes += len(chunk)

            try:
                content_digest = decompress.uncompressed_digest(head, name, inflated)
            except InflationLimit:
                raise
            except BundlerError as e:
                self.problem(str(e))
                content_digest = "undecodable"
        else:
            decompress.drain(decompress.Tee(head, first.update))
            content_digest = "sha256:" + own.hexdigest()
            self.report.unpacked_bytes += size
        self.report.blob_bytes += size
        actual = "sha256:" + own.hexdigest()
        if actual != digest:
            self.problem(f"{name}: content hashes to {actual}")
        kept = b"".join(data.keep) if data.keep is not None else None
        self._kept += len(kept or b"")
        self.blobs[digest] = Blob(size, content_digest, kept, decompress.compression(head.head),
                                   first.data)
        self.report.blobs += 1

class _First:
    """Keeps the first `n` bytes handed to update()."""

    def __init__(self, n: int):
        self._n = n
        self.data = b""

    def update(self, chunk: bytes) -> None:
        if len(self.data) < self._n:
            self.data += chunk[: self._n - len(self.data)]


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


