"""A delta: what a receiver holding one bundle (the base) lacks to rebuild another, exactly.

Bundles are deterministic, so a delta need not carry what the base already holds: it carries
a recipe of the new bundle's bytes, in order, and the bytes the base lacks. A preserve bundle
is a run of zstd frames, one per tar member, and a blob both bundles hold is the same frame in
both: the recipe copies it from the base byte for byte, and the rebuilt bundle is identical
whatever zstd library the receiver has. A compact bundle's blobs share one long-window frame,
which changes as a whole when one layer does: the delta carries the layers the base lacks and
the recipe compresses the frame again from the base's layers and those; that gives the signed
bytes only with the zstd library the bundle was written with. Either way the rebuilt file must
hash to the new bundle's sha256 before it gets its final name; a file that does not is never
written.

The file: MAGIC, the recipe (one line of JSON), the recipe's sha256 (one line of hex), then the
payload, the bytes the recipe takes from the delta. Each payload piece carries its own sha256,
so a damaged delta is named as such before anything is written.

The recipe is untrusted (it crosses the gap with the payload), and it names the files patch
writes: the bundle (a name K3s imports as zstd), the side files build writes beside it
(STEM.manifest.json, .manifest.json.sig, .spdx.json, .txt, each at most once) and
sha256sum-*.txt files whose lines vouch for those files only, with their recorded sha256. Every
name is printable ASCII that is not hidden and not a temporary's. Its copy and data pieces add
up to at most the new bundle's size, so a recipe that names one range again and again is
refused before a byte is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from bundler import strictjson
from bundler.atomic import TEMP_SUFFIX
from bundler.bundleformat import archive, checksums, compress
from bundler.digest import CHUNK, DIGEST_RE
from bundler.errors import BundlerError, DigestMismatch, InputError
from bundler.tarstream import REGULAR, TarError, TarStream
from bundler.text import shown

MAGIC = b"bundler-delta-1\n"
FORMAT = "bundler-delta-1"
# The recipe names at most one piece per frame of the new bundle and one member per blob:
# a bundle has at most 100,002 frames and as many members, each under 200 bytes of JSON.
MAX_RECIPE = 48 << 20
# What each carried side file may be (the checksum manifest's bound is the largest).
MAX_SIDE_FILE = 64 << 20
# The files build writes beside a bundle that a delta carries when present: (suffix after
# the stem). The image list and checksum manifest first; the signature and SBOM if made.
SIDE_SUFFIXES = (".manifest.json", ".manifest.json.sig", ".spdx.json", ".txt")
MANIFEST_SUFFIX = SIDE_SUFFIXES[0]
_HEX = frozenset("0123456789abcdef")


class DeltaDamaged(DigestMismatch):
    """The delta's own bytes are not what its recipe says."""


class WrongBase(DigestMismatch):
    """The base is not the bundle the delta was made against."""


@dataclass(frozen=True)
class Recipe:
    doc: dict
    payload_at: int  # where the payload starts in the delta file

    @property
    def new(self) -> dict:
        return self.doc["new"]

    @property
    def base(self) -> dict:
        return self.doc["base"]


# -- reading ---------------------------------------------------------------------------------


def read_recipe(f: BinaryIO, path: Path) -> Recipe:
    """The recipe at the front of delta file `f`; InputError when it is not a delta,
    DeltaDamaged when its recipe is not the one it was written with."""
    if f.read(len(MAGIC)) != MAGIC:
        raise InputError(f"{path}: not a bundler delta (no {MAGIC.strip().decode()} header)")
    line = f.readline(MAX_RECIPE + 1)
    check = f.readline(66)
    if not line.endswith(b"\n") or not check.endswith(b"\n"):
        raise DeltaDamaged(f"{path}: delta damaged: its recipe is cut off or too long")
    if hashlib.sha256(line[:-1]).hexdigest().encode() != check[:-1]:
        raise DeltaDamaged(f"{path}: delta damaged: its recipe does not match its sha256")
    try:
        doc = strictjson.loads(line[:-1])
    except strictjson.StrictJSONError as e:
        raise DeltaDamaged(f"{path}: delta damaged: recipe is not JSON ({e})") from None
    _check_recipe(doc, path)
    payload_at = len(MAGIC) + len(line) + len(check)
    size = os.fstat(f.fileno()).st_size
    if size != payload_at + doc["payloadSize"]:
        raise DeltaDamaged(f"{path}: delta damaged: {size} bytes, its recipe says "
                           f"{payload_at + doc['payloadSize']}")
    return Recipe(doc, payload_at)


def _check_recipe(doc: object, path: Path) -> None:
    """Every field the rebuild uses, of the type it needs, and every payload piece inside the
    payload: a recipe is parsed before anything is written."""
    def bad(what: str) -> DeltaDamaged:
        return DeltaDamaged(f"{path}: delta damaged: recipe {what}")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad(f"format is not {FORMAT}")
    payload = doc.get("payloadSize")
    if not strictjson.is_count(payload):
        raise bad("payloadSize is not a byte count")
    for side in ("base", "new"):
        _file_entry(doc.get(side), side, bad)
    new = doc["new"]
    if not _written_name(new["file"]) or compress.unimportable_name(new["file"]):
        raise bad(f"new.file {shown(new['file'], quote=True)} is not the name of a bundle")
    pieces = doc.get("pieces")
    if not isinstance(pieces, list):
        raise bad("pieces is not a list")
    for i, piece in enumerate(pieces):
        _check_piece(piece, i, payload, bad)
    # What copy and data pieces write, before anything is: each range may be named any
    # number of times, and only the final hash would say no, after the disk is full.
    written = sum(body["size"] for p in pieces for kind, body in p.items()
                  if kind in ("copy", "data"))
    if written > new["size"]:
        raise bad(f"pieces write {written} bytes, more than the {new['size']} of "
                  f"{new['file']}")
    rebuilt = _check_files(doc.get("files"), new, payload, bad)
    _check_sums(doc.get("sums"), rebuilt, bad)


def _check_files(files: object, new: dict, payload: int,
                 bad: Callable[[str], DeltaDamaged]) -> dict[str, str]:
    """The side files, each named after the bundle and carried once; name -> sha256 of every
    file patch writes."""
    if not isinstance(files, list):
        raise bad("files is not a list")
    stem = checksums.stem(Path(new["file"]))
    rebuilt = {new["file"]: new["sha256"]}
    for i, entry in enumerate(files):
        _file_entry(entry, f"files[{i}]", bad)
        _span(entry, payload, f"files[{i}]", bad)
        if entry["size"] > MAX_SIDE_FILE:
            raise bad(f"files[{i}] is larger than {MAX_SIDE_FILE} bytes")
        name = entry["file"]
        if name not in {stem + suffix for suffix in SIDE_SUFFIXES} or name in rebuilt:
            raise bad(f"files[{i}] {shown(name, quote=True)} is not a file build writes "
                      f"beside {new['file']}, or is carried twice")
        rebuilt[name] = entry["sha256"]
    return rebuilt


def _check_sums(sums: object, rebuilt: dict[str, str],
                bad: Callable[[str], DeltaDamaged]) -> None:
    """sha256sum-*.txt files, each with lines for files patch writes, with their sha256."""
    if not isinstance(sums, dict) or not all(
            isinstance(v, dict) and all(
                _plain_name(n) and isinstance(h, str) and len(h) == 64 and set(h) <= _HEX
                for n, h in v.items()) for v in sums.values()):
        raise bad("sums is not {file: {name: sha256}}")
    for name, lines in sums.items():
        if not (_written_name(name) and name.startswith("sha256sum-") and name.endswith(".txt")
                and name not in rebuilt):
            raise bad(f"sums names {shown(name, quote=True)}, not a sha256sum-*.txt file")
        for file, sha in lines.items():
            if rebuilt.get(file) != sha:
                raise bad(f"sums: {name} vouches for {shown(file, quote=True)} with sha256 "
                          f"{sha}, not for a file the delta rebuilds with that sha256")


def _file_entry(entry: object, what: str, bad: Callable[[str], DeltaDamaged]) -> None:
    if not isinstance(entry, dict) or not _plain_name(entry.get("file")) \
            or not strictjson.is_count(entry.get("size")) \
            or not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64 \
            or not set(entry["sha256"]) <= _HEX:
        raise bad(f"{what} is not {{file, size, sha256}} of a plain file name")


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 255 and "/" not in name \
        and "\0" not in name and name not in (".", "..") and name.isprintable()


def _written_name(name: str) -> bool:
    """A name patch may write: printed by the CLI as it is (ASCII), and neither hidden nor a
    temporary's (a later run removes those as its own)."""
    return _plain_name(name) and name.isascii() and not name.startswith(".") \
        and not name.endswith(TEMP_SUFFIX)


def _span(entry: dict, payload: int, what: str, bad: Callable[[str], DeltaDamaged]) -> None:
    at, size = entry.get("offset"), entry.get("size")
    if not strictjson.is_count(at) or not strictjson.is_count(size) or at + size > payload:
        raise bad(f"{what} lies outside the payload")


def _check_piece(piece: object, i: int, payload: int,
                 bad: Callable[[str], DeltaDamaged]) -> None:
    what = f"pieces[{i}]"
    if not isinstance(piece, dict) or len(piece) != 1:
        raise bad(f"{what} is not one of copy, data, compress")
    (kind, body), = piece.items()
    if kind == "copy":
        if not isinstance(body, dict) or not strictjson.is_count(body.get("offset")) \
                or not strictjson.is_count(body.get("size")):
            raise bad(f"{what}: copy is not {{offset, size}}")
    elif kind == "data":
        _span(body if isinstance(body, dict) else {}, payload, what, bad)
        sha = body.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= _HEX:
            raise bad(f"{what}: data has no sha256")
    elif kind == "compress":
        _check_compress(body, what, payload, bad)
    else:
        raise bad(f"{what} is not one of copy, data, compress")


def _check_compress(body: object, what: str, payload: int,
                    bad: Callable[[str], DeltaDamaged]) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("level"), int) \
            or isinstance(body.get("level"), bool) or not 1 <= body["level"] <= 22 \
            or not strictjson.is_count(body.get("end")) or body["end"] > 1 << 20:
        raise bad(f"{what}: compress is not {{level, members, end}}")
    members = body.get("members")
    if not isinstance(members, list):
        raise bad(f"{what}: compress members is not a list")
    for n, member in enumerate(members):
        if not isinstance(member, dict) or not isinstance(member.get("digest"), str) \
                or not DIGEST_RE.fullmatch(member["digest"]) \
                or not strictjson.is_count(member.get("size")):
            raise bad(f"{what}: member {n} is not {{digest, size}}")
        if "offset" in member or "stored" in member:
            _span({"offset": member.get("offset"), "size": member.get("stored")}, payload,
                  f"{what}: member {n}", bad)


# -- writing ---------------------------------------------------------------------------------


def write(out: BinaryIO, doc: dict, payload: Iterator[bytes]) -> None:
    """The delta file: header, recipe, its sha256, then the payload's pieces in order."""
    line = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    out.write(MAGIC + line + b"\n" + hashlib.sha256(line).hexdigest().encode() + b"\n")
    for chunk in payload:
        out.write(chunk)


# -- frames and members of a bundle ----------------------------------------------------------


def hashed_range(f: BinaryIO, offset: int, size: int,
                 sink: Callable[[bytes], object] | None = None) -> str:
    """sha256 hex of `size` bytes of `f` from `offset` (each chunk also to `sink`)."""
    h = hashlib.sha256()
    for chunk in read_range(f, offset, size):
        h.update(chunk)
        if sink:
            sink(chunk)
    return h.hexdigest()


def read_range(f: BinaryIO, offset: int, size: int) -> Iterator[bytes]:
    fd = f.fileno()
    while size:
        chunk = os.pread(fd, min(size, 1 << 20), offset)
        if not chunk:
            raise BundlerError(f"{getattr(f, 'name', 'file')}: ended {size} bytes early")
        offset += len(chunk)
        size -= len(chunk)
        yield chunk


def frame_plain(f: BinaryIO, offset: int, size: int, limit: int, what: str) -> _Capped:
    """The content of the frames in `size` bytes of `f` from `offset`; InputError naming
    `what` past `limit` bytes."""
    window = compress.Window(f.fileno(), offset, size)
    dctx = zstandard.ZstdDecompressor(max_window_size=compress.MAX_WINDOW)
    return _Capped(dctx.stream_reader(window, read_size=CHUNK, read_across_frames=True), limit,
                   what)


class _Capped:
    """A stream that counts what comes out of it and fails past `limit` bytes."""

    def __init__(self, raw: BinaryIO, limit: int, what: str):
        self._raw, self._limit, self._what = raw, limit, what
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._raw.read(n)
        except zstandard.ZstdError as e:
            raise InputError(f"{self._what}: zstd: {e}") from None
        self.count += len(data)
        if self.count > self._limit:
            raise InputError(f"{self._what}: decompresses to more than {self._limit} bytes")
        return data

    def close(self) -> None:
        pass


# What blob_members asks of a member it is to take: (write each chunk, end of the member).
Taker = Callable[[str, int], "tuple[Callable[[bytes], object], Callable[[], None]] | None"]


def blob_members(plain: BinaryIO, what: str, take: Taker | None = None
                 ) -> list[tuple[str, int]]:
    """(digest, size) of every blob member of the tar in `plain`, in order; `take(digest,
    size)` may return (write, done) to hear that member's data."""
    found = []
    try:
        tar = TarStream(plain)
        for member in tar:
            if member.kind != REGULAR or not member.name.startswith(archive.BLOB_DIR):
                continue
            digest = "sha256:" + member.name[len(archive.BLOB_DIR):]
            found.append((digest, member.size))
            sink = take(digest, member.size) if take else None
            for chunk in iter(lambda: tar.read_data(CHUNK), b""):
                if sink:
                    sink[0](chunk)
            if sink:
                sink[1]()
    except (TarError, zstandard.ZstdError) as e:
        raise InputError(f"{what}: tar: {e}") from None
    return found
