"""The parts list: what `bundler split` cut a bundle into, read back before any part is trusted.

`NAME.tar.zst.parts.json` sits beside the parts `NAME.tar.zst.000`, `.001`, ... and records
the whole (name, size, sha256) and each part (name, offset, size, sha256). It is written with
its keys in one order and a final newline, so the same bundle cut at the same size gives the
same bytes.

Read back, the list is untrusted: it arrives over the same path as the parts. It is read
capped, as JSON Go and Python read alike (strictjson), with exactly the fields below and no
others; every name is a plain file name (no `/`, no `..`) looked up in the list's own
directory, the parts cover the whole from byte 0 without gap or overlap, and their sizes add
up to the whole's. Only then does anyone open a part. The whole's name is one join may write:
a bundle's as K3s imports it, printable ASCII, not hidden.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from bundler import localfile, strictjson
from bundler.errors import InputError
from bundler.text import quoted, shown

FORMAT = "bundler-parts"
VERSION = 1
LIST_SUFFIX = ".parts.json"
# 10,000 parts of the default size hold 40 TiB; each entry is ~200 bytes written.
MAX_PARTS = 10_000
MAX_LIST = 4 << 20
# FAT32 keeps at most 4 GiB - 1 byte in one file.
FAT32_MAX = (4 << 30) - 1
_HEX = re.compile(r"[0-9a-f]{64}")
# What K3s reads zstd from (compress.ZSTD_SUFFIXES, not imported: split and join load no zstd).
BUNDLE_SUFFIXES = (".tar.zst", ".tzst")
_TOP = ("format", "version", "whole", "parts")
_WHOLE = ("name", "size", "sha256")
_PART = ("name", "offset", "size", "sha256")
# strictjson checks the types and that no key is doubled or folds onto another.
_SCHEMA = strictjson.Struct({
    "format": strictjson.STR, "version": strictjson.INT,
    "whole": strictjson.Struct({"name": strictjson.STR, "size": strictjson.INT,
                                "sha256": strictjson.STR}),
    "parts": strictjson.ListOf(strictjson.Struct({
        "name": strictjson.STR, "offset": strictjson.INT, "size": strictjson.INT,
        "sha256": strictjson.STR})),
})


@dataclass(frozen=True)
class Part:
    name: str
    offset: int
    size: int
    sha256: str


@dataclass(frozen=True)
class PartsList:
    """A parts list read and checked; `directory` is where its parts and the whole belong."""

    directory: Path
    name: str  # the whole's file name
    size: int
    sha256: str
    parts: tuple[Part, ...]

    @property
    def whole(self) -> Path:
        """Where the whole would be, beside the parts (it need not exist)."""
        return self.directory / self.name

    def path_of(self, part: Part) -> Path:
        return self.directory / part.name


def is_parts_list(path: str | Path) -> bool:
    """Whether `path` names a parts list (by its suffix, as K3s tells files apart)."""
    return Path(path).name.endswith(LIST_SUFFIX)


def list_name(whole_name: str) -> str:
    return whole_name + LIST_SUFFIX


def part_names(whole_name: str, count: int) -> list[str]:
    """NAME.000, NAME.001, ...: three digits, more only past 1000 parts, so `ls` and
    `cat NAME.*` take them in order."""
    width = max(3, len(str(count - 1)))
    return [f"{whole_name}.{i:0{width}d}" for i in range(count)]


def dumps(parts_list: PartsList) -> bytes:
    """The list's bytes: fixed key order, two-space indent, one final newline."""
    doc = {"format": FORMAT, "version": VERSION,
           "whole": {"name": parts_list.name, "size": parts_list.size,
                     "sha256": parts_list.sha256},
           "parts": [{"name": p.name, "offset": p.offset, "size": p.size, "sha256": p.sha256}
                     for p in parts_list.parts]}
    check(doc)
    return (json.dumps(doc, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def read(path: str | Path) -> PartsList:
    """The parts list at `path`, checked; InputError naming the file and what is wrong."""
    path = Path(path)
    try:
        data = localfile.read_small(path, MAX_LIST, "parts list")
    except FileNotFoundError:
        raise InputError(f"{path}: no such parts list") from None
    except OSError as e:  # a directory or a device is refused by read_small itself
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    return loads(data, path)


def loads(data: bytes, path: Path) -> PartsList:
    """A parts list from its bytes, for the list at `path`; InputError if it is not one."""
    try:
        doc = strictjson.loads(data, _SCHEMA)
    except strictjson.StrictJSONError as e:
        raise InputError(f"{path}: not a parts list ({e})") from None
    try:
        check(doc, path.name)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    whole = doc["whole"]
    return PartsList(path.parent, whole["name"], whole["size"], whole["sha256"],
                     tuple(Part(**p) for p in doc["parts"]))


def check(doc: object, list_file: str | None = None) -> None:
    """ValueError saying what makes `doc` not a parts list (types are strictjson's)."""
    _fields(doc, _TOP, "the document")
    if doc["format"] != FORMAT or doc["version"] != VERSION:
        raise ValueError(f"format {shown(doc['format'], quote=True)} version "
                         f"{shown(doc['version'])}; want {FORMAT!r} version {VERSION}")
    whole = doc["whole"]
    _fields(whole, _WHOLE, "whole")
    _name(whole["name"], "whole.name")
    _digest(whole["sha256"], "whole.sha256")
    if not strictjson.is_count(whole["size"]) or whole["size"] == 0:
        raise ValueError(f"whole.size {shown(whole['size'])}: want a positive byte count")
    parts = doc["parts"]
    if not isinstance(parts, list) or not parts:
        raise ValueError("parts: want a non-empty list")
    if len(parts) > MAX_PARTS:
        raise ValueError(f"{len(parts)} parts, more than {MAX_PARTS}")
    taken = {whole["name"]} | ({list_file} if list_file else set())
    offset = 0
    for i, part in enumerate(parts):
        where = f"parts[{i}]"
        _fields(part, _PART, where)
        _name(part["name"], f"{where}.name")
        if part["name"] in taken:
            raise ValueError(f"{where}.name {quoted(part['name'])}: used twice (or names the "
                             "whole or the list)")
        taken.add(part["name"])
        _digest(part["sha256"], f"{where}.sha256")
        if part["offset"] != offset:
            raise ValueError(f"{where} ({quoted(part['name'])}): offset "
                             f"{shown(part['offset'])}, want {offset} (parts follow each other "
                             "from byte 0)")
        if not strictjson.is_count(part["size"]) or part["size"] == 0:
            raise ValueError(f"{where} ({quoted(part['name'])}): size {shown(part['size'])}: "
                             "want a positive byte count")
        offset += part["size"]
    if offset != whole["size"]:
        raise ValueError(f"parts add up to {offset} bytes, whole.size says {whole['size']}")
    check_whole_name(whole["name"])


def check_whole_name(name: str) -> None:
    """ValueError unless `name` is one join may write: a bundle K3s imports, shown as it is
    (printable ASCII) and not hidden (temporaries are, and a later run removes them)."""
    if not name.lower().endswith(BUNDLE_SUFFIXES) or not name.isascii() \
            or name.startswith("."):
        raise ValueError(f"whole.name {quoted(name)}: not the name of a bundle join writes "
                         f"(a plain ASCII name, not hidden, ending in "
                         f"{' or '.join(BUNDLE_SUFFIXES)})")


def _fields(obj: object, want: tuple[str, ...], where: str) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: not an object")
    missing = [k for k in want if k not in obj]
    extra = sorted(k for k in obj if k not in want)
    if missing:
        raise ValueError(f"{where}: no {missing[0]!r}")
    if extra:
        raise ValueError(f"{where}: unknown field {quoted(extra[0])}")
    nulls = [k for k in want if obj[k] is None]
    if nulls:
        raise ValueError(f"{where}.{nulls[0]}: null")


def _name(name: object, where: str) -> None:
    """A plain file name in the list's directory: never a path, never a way out of it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: want a file name")
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"{where} {quoted(name)}: not a plain file name (parts and the "
                         "whole stay in the list's directory)")
    if not name.isprintable() or len(name) > 255:
        raise ValueError(f"{where} {quoted(name)}: not a file name bundler writes")


def _digest(value: object, where: str) -> None:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise ValueError(f"{where} {shown(value, quote=True)}: want 64 lowercase hex digits")
