"""`bundler delta` and `bundler patch`: carry what a site lacks, rebuild the signed bundle.

delta reads both bundles whole (frames hashed; a compact bundle's blobs listed) and writes one
file; patch rebuilds the new bundle and its side files beside each other, atomically, and keeps
the bundle only if it hashes to the sha256 its checksum manifest records.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from bundler import localfile, strictjson
from bundler.atomic import AtomicOutputs
from bundler.bundleformat import archive, checksums, compress
from bundler.bundleformat import delta as fmt
from bundler.digest import CHUNK, Sha256Behind, VerifyingReader
from bundler.errors import DigestMismatch, EnvironmentFailure, InputError
from bundler.sources.bundle import MAX_FRAMES, inflation_limit, open_bundle
from bundler.text import shown

SIDE_SUFFIXES = fmt.SIDE_SUFFIXES
DELTA_SUFFIX = ".delta"


def make(new: Path, base: Path, output: Path | None = None) -> dict:
    """Write the delta that rebuilds `new` from `base`; a summary for the CLI."""
    found = checksums.read_manifest(new)
    if found is None:
        raise InputError(f"{new}: no checksum manifest beside it "
                         f"({checksums.stem(new)}.manifest.json); a delta records what the "
                         "rebuilt bundle must hash to")
    doc = found[0]
    recorded = strict_bundle_entry(doc, found[1])
    output = output or new.with_name(checksums.stem(new) + DELTA_SUFFIX)
    with open_bundle(new) as fn, open_bundle(base) as fb, \
            AtomicOutputs(output.parent) as outputs:
        payload = outputs.scratch_dir() / "payload"
        with open(payload, "wb") as pay:
            builder = _Builder(fn, new, fb, base, pay, doc)
            pieces = builder.pieces()
        if builder.new_sha256 != recorded["sha256"] or builder.new_size != recorded["size"]:
            raise DigestMismatch(f"{new}: sha256 {builder.new_sha256}, its checksum manifest "
                                 f"says {recorded['sha256']}")
        side = _side_files(new, payload)
        recipe = {
            "format": fmt.FORMAT,
            "base": {"file": base.name, "size": builder.base_size,
                     "sha256": builder.base_sha256},
            "new": {"file": new.name, **recorded},
            "layers": doc.get("layers"),
            "zstd": zstandard.ZSTD_VERSION,
            "pieces": pieces,
            "files": side,
            "sums": _sums(new, [new.name] + [f["file"] for f in side]),
            "payloadSize": payload.stat().st_size,
        }
        with open(outputs.temp(output.name), "wb") as out, open(payload, "rb") as body:
            fmt.write(out, recipe, iter(lambda: body.read(1 << 20), b""))
        outputs.commit()
    return summary(recipe, output)


def strict_bundle_entry(doc: dict, where: Path) -> dict:
    bundle = doc.get("bundle")
    if not isinstance(bundle, dict) or not isinstance(bundle.get("sha256"), str) \
            or not isinstance(bundle.get("size"), int):
        raise InputError(f"{where}: no bundle size and sha256 recorded")
    return {"size": bundle["size"], "sha256": bundle["sha256"]}


class _Builder:
    """The pieces of the new bundle: its frames that the base holds byte for byte are copied
    from it, the others carried; a compact bundle's body frame is compressed again from the
    base's blobs and the ones carried."""

    def __init__(self, fn: BinaryIO, new: Path, fb: BinaryIO, base: Path, pay: BinaryIO,
                 doc: dict):
        self.fn, self.new, self.fb, self.base, self.pay = fn, new, fb, base, pay
        self.compact = doc.get("layers") == "uncompressed"
        compression = doc.get("compression") if isinstance(doc.get("compression"), dict) else {}
        self.level = compression.get("level", compress.DEFAULT_LEVEL)
        self.base_frames: dict[tuple[str, int], int] = {}
        self.base_sha256, self.base_size = self._index_base()
        self.new_sha256, self.new_size = "", 0
        self._base_blobs: set[str] | None = None

    def _index_base(self) -> tuple[str, int]:
        whole = hashlib.sha256()
        spans = compress.frame_spans(self.fb, self.base, MAX_FRAMES, skippable=True)
        for offset, length in spans:
            sha = fmt.hashed_range(self.fb, offset, length, whole.update)
            self.base_frames.setdefault((sha, length), offset)
        return whole.hexdigest(), os.fstat(self.fb.fileno()).st_size

    def pieces(self) -> list[dict]:
        whole = hashlib.sha256()
        pieces: list[dict] = []
        for i, (offset, length) in enumerate(
                compress.frame_spans(self.fn, self.new, MAX_FRAMES, skippable=True)):
            sha = fmt.hashed_range(self.fn, offset, length, whole.update)
            at = self.base_frames.get((sha, length))
            if at is not None:
                _add_copy(pieces, at, length)
            elif self.compact and i > 0 and length > 0 and self._is_data(offset):
                pieces.append({"compress": self._compress_piece(offset, length)})
            else:
                pieces.append({"data": self._carry(fmt.read_range(self.fn, offset, length))})
        self.new_sha256 = whole.hexdigest()
        self.new_size = os.fstat(self.fn.fileno()).st_size
        return pieces

    def _is_data(self, offset: int) -> bool:
        head = os.pread(self.fn.fileno(), 4, offset)
        return head == b"\x28\xb5\x2f\xfd"

    def _carry(self, chunks: Iterator[bytes]) -> dict:
        at = self.pay.tell()
        h = hashlib.sha256()
        for chunk in chunks:
            h.update(chunk)
            self.pay.write(chunk)
        return {"offset": at, "size": self.pay.tell() - at, "sha256": h.hexdigest()}

    def _compress_piece(self, offset: int, length: int) -> dict:
        have = self.base_blobs()
        carried: dict[str, dict] = {}

        def take(digest: str, size: int) -> tuple | None:
            if digest in have or digest in carried:
                return None
            blob = _CarriedBlob(self.pay, self.level, size)
            carried[digest] = blob.entry
            return blob.write, blob.done

        plain = fmt.frame_plain(self.fn, offset, length,
                                inflation_limit(os.fstat(self.fn.fileno()).st_size),
                                str(self.new))
        members = fmt.blob_members(plain, str(self.new), take)
        while plain.read(CHUNK):
            pass
        body = sum(archive.blob_segment(d, s, _never, True).size for d, s in members)
        return {"level": self.level, "end": plain.count - body, "members": [
            {"digest": d, "size": s, **carried.get(d, {})} for d, s in members]}

    def base_blobs(self) -> set[str]:
        if self._base_blobs is None:
            size = os.fstat(self.fb.fileno()).st_size
            plain = fmt.frame_plain(self.fb, 0, size, inflation_limit(size), str(self.base))
            self._base_blobs = {d for d, _ in fmt.blob_members(plain, str(self.base))}
        return self._base_blobs


class _CarriedBlob:
    """One blob the base lacks, compressed into the payload as a zstd frame of its own."""

    def __init__(self, pay: BinaryIO, level: int, size: int):
        self._pay = pay
        self.entry = {"offset": pay.tell(), "stored": 0}
        self._writer = compress.compressor(level, size).stream_writer(
            _Unclosed(pay), size=size, write_return_read=True)

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    def done(self) -> None:
        self._writer.flush(zstandard.FLUSH_FRAME)
        self.entry["stored"] = self._pay.tell() - self.entry["offset"]


class _Unclosed:
    def __init__(self, raw: BinaryIO):
        self._raw = raw

    def write(self, data: bytes) -> int:
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()


def _never() -> BinaryIO:
    raise AssertionError("a segment's size needs no bytes")


def _add_copy(pieces: list[dict], offset: int, length: int) -> None:
    last = pieces[-1].get("copy") if pieces else None
    if last and last["offset"] + last["size"] == offset:
        last["size"] += length
    else:
        pieces.append({"copy": {"offset": offset, "size": length}})


def _side_files(new: Path, payload: Path) -> list[dict]:
    side = []
    stem = checksums.stem(new)
    with open(payload, "ab") as pay:
        for suffix in SIDE_SUFFIXES:
            path = new.with_name(stem + suffix)
            if not path.exists():
                continue
            data = localfile.read_small(path, fmt.MAX_SIDE_FILE, "file beside the bundle",
                                        follow_symlinks=False)
            side.append({"file": path.name, "offset": pay.tell(), "size": len(data),
                         "sha256": hashlib.sha256(data).hexdigest()})
            pay.write(data)
    return side


def _sums(new: Path, names: list[str]) -> dict[str, dict[str, str]]:
    """The sha256sum-*.txt lines beside `new` for the files the delta rebuilds."""
    out: dict[str, dict[str, str]] = {}
    for sums in sorted(new.parent.glob("sha256sum-*.txt")):
        entries = checksums.read_sums(sums, follow_symlinks=False)
        mine = {n: h for n, h in entries.items() if n in names}
        if mine:
            out[sums.name] = mine
    return out


# -- patch -------------------------------------------------------------------------------------


def patch(base: Path, delta: Path, output_dir: Path | None = None) -> dict:
    """Rebuild the delta's bundle and side files from `base` into `output_dir` (default:
    beside the delta); a summary for the CLI."""
    output_dir = output_dir or delta.parent
    with _open(delta, "delta") as fd:
        recipe = fmt.read_recipe(fd, delta)
        _check_compressed_bound(recipe, delta)
        for entry in recipe.doc["files"]:
            if entry["file"].endswith(fmt.MANIFEST_SUFFIX):
                _check_manifest(recipe, fd, delta, entry)
        output_dir.mkdir(parents=True, exist_ok=True)  # only for a delta that reads well
        _check_space(output_dir, recipe.new)
        with open_bundle(base) as fb, AtomicOutputs(output_dir) as outputs:
            size = os.fstat(fb.fileno()).st_size
            if size != recipe.base["size"]:
                raise fmt.WrongBase(
                    f"{base}: not the base this delta was made against ({size} bytes; "
                    f"{shown(recipe.base['file'])} was {recipe.base['size']} bytes)")
            rebuild = _Rebuild(recipe, fd, delta, fb, base, outputs.scratch_dir())
            with open(outputs.temp(recipe.new["file"]), "w+b", buffering=0) as raw, \
                    _Out(raw) as out:
                rebuild.write(out)
            for entry in recipe.doc["files"]:
                _side(recipe, fd, delta, entry, outputs)
            for name, entries in recipe.doc["sums"].items():
                _merge_sums(output_dir, name, entries, outputs)
            outputs.commit()
    return summary(recipe.doc, output_dir / recipe.new["file"])


def _check_compressed_bound(recipe: fmt.Recipe, delta: Path) -> None:
    """What the compress pieces feed zstd: each blob once (a bundle's tar holds each once),
    and at most what verify lets the new bundle decompress to. A recipe naming one blob of
    the base again and again would take hours to compress before the final hash says no."""
    limit = inflation_limit(recipe.new["size"])
    plain, seen = 0, set()
    for piece in recipe.doc["pieces"]:
        body = piece.get("compress")
        if not body:
            continue
        plain += body["end"]
        for m in body["members"]:
            if m["digest"] in seen:
                raise fmt.DeltaDamaged(f"{delta}: delta damaged: its recipe compresses "
                                       f"{archive.blob_path(m['digest'])} twice")
            seen.add(m["digest"])
            plain += archive.blob_segment(m["digest"], m["size"], _never, True).size
    if plain > limit:
        raise fmt.DeltaDamaged(f"{delta}: delta damaged: its recipe compresses {plain} bytes "
                               f"for a bundle of {recipe.new['size']}, more than the "
                               f"{limit} verify reads from one")


def _check_space(directory: Path, new: dict) -> None:
    """The bundle the recipe says it rebuilds fits where it is written: a recipe that claims
    a bundle larger than the disk would fill it before the final hash says no."""
    fs = os.statvfs(directory)
    free = fs.f_bavail * fs.f_frsize
    if new["size"] > free:
        raise EnvironmentFailure(f"{directory}: {free} bytes free, {shown(new['file'])} is "
                                 f"{new['size']} bytes; nothing was written")


def _open(path: Path, what: str) -> BinaryIO:
    try:
        return localfile.open_regular(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what} ({e.strerror})") from None


class _Out:
    """What patch writes: into the file, hashed on another core as it goes, so that proving
    the rebuilt bundle costs little more than copying it. A range of the base is copied by
    the kernel (copy_file_range, as cp does) and hashed as read back from the output."""

    def __init__(self, raw: BinaryIO):
        self._raw, self._fd = raw, raw.fileno()
        self._hash, self.size = Sha256Behind("patch"), 0
        self._kernel_copy = hasattr(os, "copy_file_range")

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self._hash.update(bytes(data))
        self.size += len(data)
        return len(data)

    def copy_from(self, f: BinaryIO, offset: int, size: int) -> None:
        """`size` bytes of `f` from `offset`, appended."""
        src = f.fileno()
        while size and self._kernel_copy:
            try:
                n = os.copy_file_range(src, self._fd, min(size, _COPY_STEP), offset)
            except OSError:  # another file system, an old kernel: copy in user space
                self._kernel_copy = False
                break
            if n == 0:
                raise fmt.WrongBase(f"{getattr(f, 'name', 'base')}: ended {size} bytes early")
            self._hash.update_from(self._fd, self.size, n)
            offset, size, self.size = offset + n, size - n, self.size + n
        for chunk in fmt.read_range(f, offset, size):
            self.write(chunk)

    def flush(self) -> None:
        pass  # unbuffered: every write is the file's already

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def __enter__(self) -> _Out:
        return self

    def __exit__(self, *exc: object) -> None:
        self._hash.close()


_COPY_STEP = 8 << 20


class _Rebuild:
    def __init__(self, recipe: fmt.Recipe, fd: BinaryIO, delta: Path, fb: BinaryIO,
                 base: Path, scratch: Path):
        self.recipe, self.fd, self.delta, self.fb, self.base = recipe, fd, delta, fb, base
        self.scratch = scratch

    def write(self, out: _Out) -> None:
        recompressed = False
        for i, piece in enumerate(self.recipe.doc["pieces"]):
            (kind, body), = piece.items()
            if kind == "copy":
                self._copy(body, out)
            elif kind == "data":
                got = fmt.hashed_range(self.fd, self.recipe.payload_at + body["offset"],
                                       body["size"], out.write)
                if got != body["sha256"]:
                    raise fmt.DeltaDamaged(f"{self.delta}: delta damaged: piece {i} has "
                                           f"sha256 {got}, its recipe says {body['sha256']}")
            else:
                self._compress(body, out)
                recompressed = True
        self._check(out, recompressed)

    def _copy(self, body: dict, out: _Out) -> None:
        if body["offset"] + body["size"] > self.recipe.base["size"]:
            raise fmt.WrongBase(f"{self.base}: shorter than the delta's base")
        out.copy_from(self.fb, body["offset"], body["size"])

    def _check(self, out: _Out, recompressed: bool) -> None:
        new = self.recipe.new
        if out.digest == "sha256:" + new["sha256"] and out.size == new["size"]:
            return
        if recompressed:
            raise DigestMismatch(
                f"{new['file']}: the rebuilt bundle hashes to {out.digest}, not the "
                f"sha256:{new['sha256']} its checksum manifest records: its compact frame "
                f"compresses differently with this zstd ({zstandard.ZSTD_VERSION}; the "
                f"delta was made with {shown(self.recipe.doc.get('zstd'))}); nothing was "
                "written")
        raise fmt.WrongBase(f"{self.base}: not the base this delta was made against (the "
                            f"bundle rebuilt from it hashes to {out.digest}, not "
                            f"sha256:{new['sha256']})")

    def _compress(self, body: dict, out: _Out) -> None:
        members = body["members"]
        spooled = self._spool({m["digest"] for m in members if "offset" not in m})
        segments = []
        for m in members:
            opener = (self._carried(m) if "offset" in m else _file_opener(spooled[m["digest"]]))
            what = (f"{self.delta}: delta damaged: " if "offset" in m else f"{self.base}: ") \
                + archive.blob_path(m["digest"])
            segments.append(archive.blob_segment(
                m["digest"], m["size"], _verifying(opener, m["digest"], m["size"], what), True))
        end = bytes(body["end"])
        segments.append(archive.Segment(f"end {len(end)}", len(end), True,
                                        lambda: iter((end,)), head=end))
        group = compress.FrameGroup(tuple(segments), body["level"], streamed=True)
        compress.write_frames([group], out)  # type: ignore[arg-type]  (no cache: write only)

    def _spool(self, wanted: set[str]) -> dict[str, Path]:
        """The blobs of the base the body needs, copied out of it (checked against their
        digests when read back)."""
        got: dict[str, Path] = {}

        def take(digest: str, size: int) -> tuple | None:
            if digest not in wanted or digest in got:
                return None
            got[digest] = self.scratch / digest.split(":")[1]
            f = open(got[digest], "wb")  # noqa: SIM115  closed when the member ends
            return f.write, f.close

        size = self.recipe.base["size"]
        try:
            fmt.blob_members(fmt.frame_plain(self.fb, 0, size, inflation_limit(size),
                                             str(self.base)), str(self.base), take)
        except InputError as e:
            raise fmt.WrongBase(f"{e}: not the base this delta was made against") from None
        missing = sorted(wanted - set(got))
        if missing:
            raise fmt.WrongBase(f"{self.base}: not the base this delta was made against "
                                f"(it lacks {archive.blob_path(missing[0])})")
        return got

    def _carried(self, m: dict) -> Callable[[], BinaryIO]:
        def open_carried() -> BinaryIO:
            return fmt.frame_plain(  # type: ignore[return-value]
                self.fd, self.recipe.payload_at + m["offset"], m["stored"], m["size"] + 1,
                f"{self.delta}: {archive.blob_path(m['digest'])}")
        return open_carried


def _file_opener(path: Path) -> Callable[[], BinaryIO]:
    return lambda: open(path, "rb")


def _verifying(opener: Callable[[], BinaryIO], digest: str, size: int,
               what: str) -> Callable[[], BinaryIO]:
    def open_checked() -> BinaryIO:
        return VerifyingReader(opener(), digest, size, what)  # type: ignore[return-value]
    return open_checked


def _side(recipe: fmt.Recipe, fd: BinaryIO, delta: Path, entry: dict,
          outputs: AtomicOutputs) -> None:
    with open(outputs.temp(entry["file"]), "wb") as out:
        got = fmt.hashed_range(fd, recipe.payload_at + entry["offset"], entry["size"],
                               out.write)
    if got != entry["sha256"]:
        raise fmt.DeltaDamaged(f"{delta}: delta damaged: {entry['file']} has sha256 {got}, "
                               f"its recipe says {entry['sha256']}")


def _check_manifest(recipe: fmt.Recipe, fd: BinaryIO, delta: Path, entry: dict) -> None:
    """The carried checksum manifest records the bundle the recipe rebuilds: verify and place
    hold the rebuilt bundle to it, and a delta whose two disagree was not written by delta."""
    data = b"".join(fmt.read_range(fd, recipe.payload_at + entry["offset"], entry["size"]))
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise fmt.DeltaDamaged(f"{delta}: delta damaged: {entry['file']} does not match its "
                               "sha256")
    try:
        doc = strictjson.loads(data)
    except strictjson.StrictJSONError as e:
        raise fmt.DeltaDamaged(f"{delta}: delta damaged: {entry['file']} is not JSON "
                               f"({e})") from None
    bundle = doc.get("bundle") if isinstance(doc, dict) else None
    new = recipe.new
    if not isinstance(bundle, dict) or (bundle.get("size"), bundle.get("sha256")) != (
            new["size"], new["sha256"]):
        raise fmt.DeltaDamaged(f"{delta}: delta damaged: {entry['file']} records another "
                               f"bundle than the {new['file']} its recipe rebuilds")


def _merge_sums(directory: Path, name: str, entries: dict[str, str],
                outputs: AtomicOutputs) -> None:
    existing = directory / name
    have = checksums.read_sums(existing, follow_symlinks=False) if existing.exists() else {}
    with open(outputs.temp(name), "wb") as out:
        out.write(checksums.merged_sums(have, entries))


def summary(doc: dict, path: Path) -> dict:
    """What a delta holds, for the CLI and inspect."""
    pieces = doc["pieces"]
    copied = sum(p["copy"]["size"] for p in pieces if "copy" in p)
    carried = sum(p["data"]["size"] for p in pieces if "data" in p)
    members = [m for p in pieces if "compress" in p for m in p["compress"]["members"]]
    return {
        "file": str(path),
        "base": doc["base"],
        "new": doc["new"],
        "layers": doc.get("layers"),
        "copiedFromBase": copied,
        "carriedFrames": carried,
        "recompressed": {"blobs": len(members),
                         "carried": sum(1 for m in members if "offset" in m),
                         "carriedBytes": sum(m.get("stored", 0) for m in members)}
        if members else None,
        "files": [f["file"] for f in doc["files"]],
        "payloadSize": doc["payloadSize"],
    }


def describe(path: Path) -> dict:
    """inspect of a delta file."""
    with _open(path, "delta") as f:
        return summary(fmt.read_recipe(f, path).doc, path)


def render(info: dict, as_json: bool) -> str:
    """inspect's output for a delta: JSON, or a few lines a person reads."""
    if as_json:
        return json.dumps(info, indent=2, sort_keys=True) + "\n"
    new, base = info["new"], info["base"]
    lines = [f"delta {shown(info['file'], limit=1 << 16)}: rebuilds {shown(new['file'])} "
             f"({new['size']} bytes, sha256:{new['sha256']})",
             f"  from base {shown(base['file'])} ({base['size']} bytes, "
             f"sha256:{base['sha256']})",
             f"  layers {shown(info['layers'])}: {info['copiedFromBase']} bytes copied from "
             f"the base, {info['carriedFrames']} bytes of frames carried"]
    if info["recompressed"]:
        r = info["recompressed"]
        lines.append(f"  one frame compressed again from {r['blobs']} blobs, {r['carried']} "
                     f"carried ({r['carriedBytes']} bytes); byte-identical with the zstd "
                     "library it was written with")
    lines.append(f"  side files: {', '.join(shown(f) for f in info['files']) or 'none'}")
    return "\n".join(lines) + "\n"


def is_delta(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(fmt.MAGIC)) == fmt.MAGIC
    except OSError:
        return False
