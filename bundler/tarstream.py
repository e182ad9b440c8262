"""A strict, streaming tar reader: members in order, each with a stream of its data.

Used by verify, which must account for every byte of a bundle, so it is stricter than tarfile:
header checksums are checked, pax and GNU long names are understood, and anything after the
end-of-archive marker other than zero padding is an error. Offsets in messages are positions
in the uncompressed tar.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 512
# Extended headers are metadata about the next member; they are small in any sane archive.
_MAX_EXTENDED = 1 << 20

REGULAR, DIRECTORY = "file", "dir"
_TYPES = {b"0": REGULAR, b"\0": REGULAR, b"7": REGULAR, b"5": DIRECTORY, b"1": "hard link",
          b"2": "symlink", b"3": "character device", b"4": "block device", b"6": "fifo"}


class TarError(Exception):
    """The archive is malformed; the message says where."""


@dataclass
class Member:
    name: str
    kind: str  # "file", "dir", "symlink", "hard link", "character device", ...
    size: int
    offset: int  # of the header
    linkname: str = ""


class _Reader:
    """Exact reads from a stream, counting the offset."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.offset = 0

    def read(self, n: int) -> bytes:
        parts, want = [], n
        while want:
            data = self.raw.read(want)
            if not data:
                break
            parts.append(data)
            want -= len(data)
        data = b"".join(parts)
        self.offset += len(data)
        return data

    def exact(self, n: int, what: str) -> bytes:
        start = self.offset
        data = self.read(n)
        if len(data) != n:
            raise TarError(f"tar ends inside {what} (byte {start + len(data)})")
        return data


class TarStream:
    """Iterate members with `for member in TarStream(f)`; read each one's data before the next
    with read_data(); the iteration ends at the end-of-archive marker and checks the padding."""

    def __init__(self, raw: BinaryIO, chunk: int = 1 << 20):
        self._r = _Reader(raw)
        self._chunk = chunk
        self._left = 0  # data bytes of the current member not yet read
        self._pad = 0

    def __iter__(self) -> Iterator[Member]:
        extended: dict[str, str] = {}
        while True:
            self._skip_rest()
            start = self._r.offset
            header = self._r.read(BLOCK)
            if not header:
                raise TarError(f"tar ends without its end-of-archive marker (byte {start})")
            if len(header) < BLOCK:
                raise TarError(f"tar ends inside a header (byte {start})")
            if header == bytes(BLOCK):
                self._check_end(start)
                return
            kind_flag, name, size, linkname = _parse_header(header, start)
            if kind_flag in (b"x", b"g", b"L", b"K"):
                if size > _MAX_EXTENDED:
                    raise TarError(f"extended header of {size} bytes at byte {start}")
                data = self._r.exact(size, f"an extended header at byte {start}")
                self._r.exact(-size % BLOCK, "padding")
                if kind_flag == b"x":
                    extended.update(_parse_pax(data, start))
                elif kind_flag == b"L":
                    extended["path"] = data.rstrip(b"\0").decode("utf-8", "replace")
                elif kind_flag == b"K":
                    extended["linkpath"] = data.rstrip(b"\0").decode("utf-8", "replace")
                continue  # global pax headers ('g') carry nothing we use
            if "size" in extended:
                try:
                    size = int(extended["size"])
                except ValueError:
                    raise TarError(f"bad pax size at byte {start}") from None
            member = Member(extended.get("path", name), _TYPES.get(kind_flag,
                            f"type {kind_flag!r}"), size, start,
                            extended.get("linkpath", linkname))
            extended = {}
            has_data = member.kind == REGULAR
            self._left = size if has_data else 0
            self._pad = -size % BLOCK if has_data else 0
            yield member

    def read_data(self, n: int = -1) -> bytes:
        """The next bytes of the current member's data (b"" at its end)."""
        if self._left <= 0:
            return b""
        want = self._left if n is None or n < 0 else min(n, self._left)
        want = min(want, self._chunk)
        data = self._r.read(want)
        if not data:
            raise TarError(f"tar ends inside a member's data (byte {self._r.offset})")
        self._left -= len(data)
        return data

    def _skip_rest(self) -> None:
        while self.read_data():
            pass
        if self._pad:
            self._r.exact(self._pad, "padding")
            self._pad = 0

    def _check_end(self, start: int) -> None:
        # One zero block was read; the second, and all record padding, must be zeros too.
        while True:
            data = self._r.read(self._chunk)
            if not data:
                return
            if data.count(0) != len(data):
                at = self._r.offset - len(data) + next(i for i, b in enumerate(data) if b)
                raise TarError(f"data after the end of the tar archive (byte {at}; the "
                               f"end-of-archive marker is at byte {start})")


def _number(field: bytes, what: str, offset: int) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256 for values that do not fit octal
        if field[0] == 0xFF:
            raise TarError(f"negative {what} in header at byte {offset}")
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b" \0").lstrip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarError(f"bad {what} field in header at byte {offset}") from None


def _parse_header(h: bytes, offset: int) -> tuple[bytes, str, int, str]:
    stored = _number(h[148:156], "checksum", offset)
    actual = sum(h[:148]) + 8 * 32 + sum(h[156:])
    if stored != actual:
        raise TarError(f"header checksum mismatch at byte {offset}")
    name = _text(h[0:100])
    if h[257:262] == b"ustar" and h[345:500].strip(b"\0"):
        name = _text(h[345:500]) + "/" + name
    return h[156:157], name, _number(h[124:136], "size", offset), _text(h[157:257])


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")


def _parse_pax(data: bytes, offset: int) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarError(f"bad pax record in extended header at byte {offset}") from None
        record = data[space + 1 : pos + length - 1]  # drop the trailing newline
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        if length <= 0:
            raise TarError(f"bad pax record in extended header at byte {offset}")
        pos += length
    return out
