"""`bundler split` and `bundler join`: a bundle cut into parts a medium takes, and made whole.

split streams the bundle once into parts of at most a given size and a parts list
(bundleformat/parts.py) recording each part's size and sha256 beside the whole's; all of them
appear under their final names together, or none does. The parts are checked one by one on
the other side (verify_parts), so a damaged or missing part is named and only it is sent
again; join checks every part and the whole while it writes the bundle, atomically.

Memory stays flat: bytes move in CHUNK pieces, and a part's sha256 and the whole's are
computed as the bytes pass, each on a thread of its own (_Hashing).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from bundler import localfile
from bundler.atomic import AtomicOutputs
from bundler.bundleformat import checksums, parts
from bundler.digest import CHUNK, Sha256Behind
from bundler.errors import InputError, VerificationFailed
from bundler.text import shown

if TYPE_CHECKING:
    from bundler.checks.verify import Report

# SI units are powers of 1000, IEC units powers of 1024 (IEC 80000-13); a bare number is bytes.
# "K", "G", "KB" or "4g" say neither exactly, so they are refused rather than guessed.
UNITS = {"": 1, "B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_SIZE_RE = re.compile(r"([0-9]{1,20})\s?([A-Za-z]*)")


def parse_size(text: str) -> int:
    """`4GiB`, `700MB`, `1000000`: a part size in bytes; ValueError saying why not."""
    m = _SIZE_RE.fullmatch(text.strip())
    if not m or m.group(2) not in UNITS:
        raise ValueError(f"want a number of bytes with an optional unit: "
                         f"{', '.join(u for u in UNITS if u)} (kB, MB, GB, TB are powers of "
                         "1000; KiB, MiB, GiB, TiB of 1024)")
    size = int(m.group(1)) * UNITS[m.group(2)]
    if size < 1:
        raise ValueError("want at least 1 byte")
    return size


def split(bundle: str | Path, part_size: int = parts.FAT32_MAX,
          output_dir: str | Path | None = None) -> tuple[Path, parts.PartsList]:
    """Cut `bundle` into parts of at most `part_size` bytes in `output_dir` (default: beside
    it), with its parts list; returns the list's path and content.

    The bundle's checksum manifest and sha256sum files beside it, if any, must agree with the
    bytes read (VerificationFailed otherwise). On any failure or interrupt nothing appears
    under a final name; parts of an earlier split of the same name that this one does not
    write again are removed with the commit (no stale part is left beside the new list).
    """
    source = Path(bundle)
    out = Path(output_dir) if output_dir is not None else source.parent
    try:
        parts.check_whole_name(source.name)
    except ValueError as e:
        raise InputError(f"{source}: {e}") from None
    found = checksums.read_manifest(source)
    sums = checksums.sums_beside(source)
    try:
        f = localfile.open_regular(source)
    except FileNotFoundError:
        raise InputError(f"{source}: no such bundle") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        count = -(-size // part_size)
        if size == 0:
            raise InputError(f"{source}: empty file, not a bundle")
        if count > parts.MAX_PARTS:
            raise InputError(f"{source}: {size} bytes in parts of {part_size} would make {count} "
                             f"parts, more than {parts.MAX_PARTS}; choose a larger part size")
        out.mkdir(parents=True, exist_ok=True)
        with AtomicOutputs(out) as outputs, Sha256Behind("split-whole") as whole:
            names = parts.part_names(source.name, count)
            written = [_write_part(f, outputs.temp(name), name, i * part_size,
                                   min(part_size, size - i * part_size), whole, source)
                       for i, name in enumerate(names)]
            if f.read(1):
                raise VerificationFailed(f"{source}: grew while being split; nothing written")
            listed = parts.PartsList(out, source.name, size, whole.hexdigest(), tuple(written))
            problems, _ = checksums.check_file(source, size, listed.sha256,
                                               found[0] if found else None, sums)
            if problems:
                raise VerificationFailed(f"{problems[0]}; nothing written")
            list_path = out / parts.list_name(source.name)
            outputs.temp(list_path.name).write_bytes(parts.dumps(listed))
            for stale in _stale_parts(out, source.name, set(names)):
                outputs.remove(stale)
            outputs.commit()
    return list_path, listed




class _Plain:
    """A sha256 on the calling thread, as _Hashing's stand-in where nothing runs beside it."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.update = self._hash.update
        self.hexdigest = self._hash.hexdigest

    def __enter__(self) -> _Plain:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _pump(src: BinaryIO, size: int, sinks: list[Callable[[bytes], object]]) -> int:
    """Hand `size` bytes of `src` to every sink in turn, piece by piece; the bytes left
    unread when `src` ends early."""
    left = size
    while left and (chunk := src.read(min(CHUNK, left))):
        for sink in sinks:
            sink(chunk)
        left -= len(chunk)
    return left


def _write_part(f: BinaryIO, temp: Path, name: str, offset: int, size: int,
                whole: Sha256Behind, source: Path) -> parts.Part:
    with open(temp, "xb") as dst, Sha256Behind("split-part") as own:
        left = _pump(f, size, [own.update, whole.update, dst.write])
        if left:
            raise VerificationFailed(f"{source}: shrank while being split; nothing written")
        return parts.Part(name, offset, size, own.hexdigest())


def _stale_parts(directory: Path, whole_name: str, keep: set[str]) -> list[str]:
    pattern = re.compile(re.escape(whole_name) + r"\.[0-9]{3,}")
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in entries if pattern.fullmatch(n) and n not in keep)


class PartProblem(VerificationFailed):
    """A part is missing, or its size or sha256 is not the one the parts list records."""


def _open_part(listed: parts.PartsList, part: parts.Part) -> BinaryIO:
    """The part, opened; PartProblem naming it when it is missing, not a regular file or
    not of its recorded size. A part is never read through a symlink: its name comes from an
    untrusted list, and a root-run place must not be led to read another file."""
    path = listed.path_of(part)
    try:
        f = localfile.open_regular(path, follow_symlinks=False)
    except FileNotFoundError:
        raise PartProblem(f"{shown(part.name)}: missing") from None
    except InputError as e:
        raise PartProblem(f"{shown(part.name)}: "
                          f"{str(e).removeprefix(str(path) + ': ')}") from None
    except OSError as e:
        raise PartProblem(f"{shown(part.name)}: cannot read ({e.strerror})") from None
    have = os.fstat(f.fileno()).st_size
    if have != part.size:
        f.close()
        cut = "truncated" if have < part.size else "too long"
        raise PartProblem(f"{shown(part.name)}: {have} bytes, the parts list says {part.size} "
                          f"({cut})")
    return f


def _read_part(listed: parts.PartsList, part: parts.Part,
               also: list[Callable[[bytes], object]] | None = None) -> None:
    """Read the part whole, handing each piece to the sinks of `also` too (the whole's hash
    and the joined file); PartProblem naming it when it is not the part the list records.
    With sinks, the part's hash runs on a thread of its own beside them."""
    with _open_part(listed, part) as f, \
            Sha256Behind("join-part") if also else _Plain() as own:
        left = _pump(f, part.size, [own.update, *(also or [])])
        digest = own.hexdigest()
    if left:
        raise PartProblem(f"{shown(part.name)}: shrank while being read")
    if digest != part.sha256:
        raise PartProblem(f"{shown(part.name)}: damaged (sha256 {digest}, the parts list says "
                          f"{part.sha256})")


def check_parts(listed: parts.PartsList) -> list[str]:
    """One line per part that is missing or not as recorded (size first, then sha256)."""
    problems = []
    for part in listed.parts:
        try:
            _read_part(listed, part)
        except PartProblem as e:
            problems.append(str(e))
    return problems


def verify_parts(parts_list: str | Path, manifest: str | Path | None = None, *,
                 require_checksum: bool = False,
                 max_inflation: float | None = None,
                 key: str | Path | None = None, allow_rename: bool = False,
                 not_before: datetime | None = None) -> Report:
    """verify for a parts list: every part is checked (each damaged or missing one is a
    problem of its own, so only those are sent again); when all are good, the joined bytes
    are verified as verify.verify checks a bundle, read from the parts in order without
    writing the whole, with the checksum files beside the list (NAME.manifest.json,
    sha256sum-*.txt) vouching for the whole's name. The parts are read twice.
    `max_inflation`: as verify's (default: its default)."""
    return _verify_listed(parts.read(parts_list), parts_list, manifest,
                          require_checksum=require_checksum, max_inflation=max_inflation,
                          key=key, allow_rename=allow_rename, not_before=not_before)


def _verify_listed(listed: parts.PartsList, parts_list: str | Path,
                   manifest: str | Path | None = None, *, require_checksum: bool = False,
                   max_inflation: float | None = None, key: str | Path | None = None,
                   allow_rename: bool = False, not_before: datetime | None = None) -> Report:
    from bundler.checks import verify  # split and join check no content: only this loads it

    problems = check_parts(listed)
    if problems:
        report = verify.Report(str(parts_list))
        for text in problems:
            report.problem(text)
        return report
    with JoinedFile(listed) as joined:
        report = verify.verify(listed.whole, manifest, require_checksum=require_checksum,
                               max_inflation=max_inflation or verify.DEFAULT_MAX_INFLATION,
                               key=key,
                               allow_rename=allow_rename, not_before=not_before,
                               opened=joined)
    report.file = str(parts_list)
    if report.size is not None and (report.size, report.sha256) != (listed.size,
                                                                    listed.sha256):
        report.problem(f"{shown(listed.name)}: the parts join to {report.size} bytes with sha256 "
                       f"{report.sha256}, the parts list says {listed.size} bytes with sha256 "
                       f"{listed.sha256}")
    return report


class JoinedFile:
    """The parts of a checked list read as one seekable file, part by part, never joined on
    disk (for verify and place). A part that changed since it was checked raises PartProblem:
    what was checked is what is read, or nothing."""

    def __init__(self, listed: parts.PartsList):
        self._listed = listed
        self._pos = 0
        self._index = -1
        self._f: BinaryIO | None = None

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._listed.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes, fewer only at the end of the whole: as a file reads, across the
        end of a part (a frame header cut between two parts is read whole)."""
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        pieces = []
        while n > 0 and (piece := self._read_in_part(n)):
            pieces.append(piece)
            n -= len(piece)
        return b"".join(pieces)

    def _read_in_part(self, n: int) -> bytes:
        if self._pos >= self._listed.size or n == 0:
            return b""
        part_at = self._part_at(self._pos)
        part = self._listed.parts[part_at]
        f = self._open(part_at)
        f.seek(self._pos - part.offset)
        want = min(n, part.offset + part.size - self._pos)
        data = f.read(want)
        if len(data) < want:
            raise PartProblem(f"{shown(part.name)}: shrank while being read")
        self._pos += len(data)
        return data

    def _part_at(self, pos: int) -> int:
        if 0 <= self._index and self._covers(self._index, pos):
            return self._index
        lo, hi = 0, len(self._listed.parts) - 1
        while lo < hi:  # the last part starting at or before pos
            mid = (lo + hi + 1) // 2
            if self._listed.parts[mid].offset <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _covers(self, i: int, pos: int) -> bool:
        p = self._listed.parts[i]
        return p.offset <= pos < p.offset + p.size

    def _open(self, i: int) -> BinaryIO:
        if i != self._index or self._f is None:
            self.close()
            self._f = _open_part(self._listed, self._listed.parts[i])
            self._index = i
        return self._f

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> JoinedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def join(parts_list: str | Path, output_dir: str | Path | None = None) -> tuple[Path, int, str]:
    """Write the whole a parts list describes into `output_dir` (default: the list's
    directory), checking each part and the whole as it goes; (path, size, sha256).

    PartProblem names the first bad part; the whole appears under its final name only when
    every part and the whole hash as recorded, else nothing does."""
    listed = parts.read(parts_list)
    out = Path(output_dir) if output_dir is not None else listed.directory
    out.mkdir(parents=True, exist_ok=True)
    with AtomicOutputs(out) as outputs, Sha256Behind("join-whole") as whole:
        temp = outputs.temp(listed.name)
        with open(temp, "xb") as dst:
            for part in listed.parts:
                try:
                    _read_part(listed, part, [whole.update, dst.write])
                except PartProblem as e:
                    raise PartProblem(f"{e}; nothing joined") from None
        if whole.hexdigest() != listed.sha256:
            raise VerificationFailed(f"{parts_list}: the parts join to sha256 "
                                     f"{whole.hexdigest()}, whole.sha256 says {listed.sha256}; "
                                     "nothing joined")
        outputs.commit()
    return out / listed.name, listed.size, listed.sha256


def for_place(parts_list: Path, *, key: str | Path | None, allow_rename: bool,
              not_before: datetime | None
              ) -> tuple[Path, Callable[[Path], BinaryIO], Report]:
    """What place needs to place the whole of a parts list: the whole's path (its name is
    the placed file's), an opener that reads the whole from its parts, and verify's report
    on it. The parts are read again as they are copied, and the copy is checked against the
    report's sha256, as for a bundle. The list is read once: the name the whole lands under
    is the one verify held the checksum files (and the signature) to."""
    listed = parts.read(parts_list)
    report = _verify_listed(listed, parts_list, key=key, allow_rename=allow_rename,
                            not_before=not_before)
    return listed.whole, lambda _: JoinedFile(listed), report


def describe(parts_list: str | Path) -> dict:
    """What a parts list holds, for inspect: the whole and its parts, as recorded (nothing is
    read but the list)."""
    listed = parts.read(parts_list)
    return {"file": str(parts_list), "kind": "parts list",
            "whole": {"name": listed.name, "size": listed.size, "sha256": listed.sha256},
            "parts": [{"name": p.name, "offset": p.offset, "size": p.size, "sha256": p.sha256}
                      for p in listed.parts],
            "verified": False}


# A listing shows names whole (escaped, never cut): they are what the user types next.
_LISTED = 1 << 16


def render_text(info: dict) -> str:
    """The description as people read it; every name shown escaped unless printable ASCII."""
    whole = info["whole"]
    count = len(info["parts"])
    lines = [f"{shown(info['file'], limit=_LISTED)}: parts list of "
             f"{shown(whole['name'], limit=_LISTED)}, "
             f"{whole['size']} bytes in {count} part{'' if count == 1 else 's'}",
             f"  sha256     {whole['sha256']}", ""]
    lines += [f"  {shown(p['name'], limit=_LISTED)}  offset {p['offset']}  {p['size']} "
              f"bytes  sha256 {p['sha256']}" for p in info["parts"]]
    lines += ["", "inspect describes what the parts list says; it does not check the parts "
              "(`bundler verify` does)"]
    return "\n".join(lines) + "\n"
