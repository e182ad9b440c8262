"""A strict, streaming tar reader: members in order, each with a stream of its data.

verify must check the very members containerd and K3s import, and they read tars with Go's
archive/tar, which reads some headers differently from Python's tarfile (and from the reader
this one replaced: two pax headers in a row can hide a second index.json). So wherever
two readers could disagree, this one refuses. It accepts only what a plain POSIX writer
produces (Python's tarfile in PAX_FORMAT, as archive.py uses it) and reads it exactly as Go's
reader does (src/archive/tar: reader.go, strconv.go, format.go):

- every header: POSIX ustar magic and version ("ustar\\0" "00"), no GNU or V7 header; the
  checksum is the unsigned sum; typeflag '0' (file) or '5' (directory), or 'x' (one pax
  header, for the member that follows);
- numbers: octal digits with blanks only where both readers skip them, or base-256 as Go
  decodes it; never a sign, an underscore or an inner space (Python's int() takes those);
- strings: printable ASCII, then only NULs to the end of the field; the prefix field is
  joined to the name as Go does (only when it is not empty);
- pax records: exact "%d key=value\\n" framing, UTF-8, no NUL, keys `path` and `size` only,
  each once, and only for a name or size the header cannot hold (as writers use them);
- padding and the end-of-archive marker: zeros, to the end of the stream (at most 1 MiB of
  them after the marker).

Offsets in messages are byte positions in the uncompressed tar.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from bundler.text import quoted

BLOCK = 512
# Go refuses a pax header of more than 1 MiB (maxSpecialFileSize, as libarchive does).
_MAX_EXTENDED = 1 << 20
# Writers pad the end to their record size (tar and tarfile: 10 KiB); zeros past this would
# only cost time, since every reader stops at the end-of-archive marker.
_MAX_END = 1 << 20

REGULAR, DIRECTORY = "file", "dir"
_PAX = b"x"
_KINDS = {b"0": REGULAR, b"5": DIRECTORY}
# Named so a refusal says what the member is; anything else is "unknown type".
_REFUSED = {
    b"\0": "old-style (V7) regular file", b"1": "hard link", b"2": "symlink",
    b"3": "character device", b"4": "block device", b"6": "fifo", b"7": "contiguous file",
    b"g": "global pax header", b"L": "GNU long name", b"K": "GNU long link name",
    b"S": "GNU sparse file", b"D": "GNU dump directory", b"M": "GNU multi-volume member",
    b"N": "GNU old long name", b"V": "GNU volume label", b"X": "Solaris extended header",
}

_MAGIC, _VERSION = b"ustar\0", b"00"
_GNU_MAGIC = b"ustar  \0"  # magic and version together, as GNU tar writes them

# (name, start, end) of the numeric fields; Go parses every one of them (reader.go readHeader)
# and fails the whole import when one does not parse.
_NUMBERS = (("mode", 100, 108), ("uid", 108, 116), ("gid", 116, 124), ("size", 124, 136),
            ("mtime", 136, 148), ("devmajor", 329, 337), ("devminor", 337, 345))
_STRINGS = (("name", 0, 100), ("linkname", 157, 257), ("uname", 265, 297),
            ("gname", 297, 329), ("prefix", 345, 500))
# Octal as both readers read it: Go trims blanks and NULs at both ends (parseOctal), Python
# cuts at the first NUL, then strips blanks (nti). Leading NULs would split them (Go skips
# them, Python reads 0), so only blanks may lead; only blanks and NULs may follow.
_OCTAL = re.compile(rb" *([0-7]+)[ \0]*")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
# A pax record: a decimal length without sign, blank or leading zero, then "key=value\n".
# At most 19 digits, as for a size: Go parses both as int64, and Python's int() refuses a
# string of more than 4300 digits with a ValueError, not a TarError.
_PAX_LENGTH = re.compile(rb"([1-9][0-9]{0,18}) ")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAME_FIELD = 100
# A pax size record is only written for sizes an 11-digit octal field cannot hold.
_OCTAL_SIZE_LIMIT = 8**11
_INT64_LIMIT = 1 << 63  # Go's ParseInt(v, 10, 64) and parseNumeric overflow here


class TarError(Exception):
    """The archive is malformed or could be read differently by another reader; the message
    says where."""


@dataclass
class Member:
    name: str
    kind: str  # REGULAR or DIRECTORY: any other type is refused
    size: int
    offset: int  # of the member's own header (after its pax header, if any)
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
    with read_data(); the iteration ends at the end-of-archive marker and checks the rest."""

    def __init__(self, raw: BinaryIO, chunk: int = 1 << 20):
        self._r = _Reader(raw)
        self._chunk = chunk
        self._left = 0  # data bytes of the current member not yet read
        self._pad = 0

    def __iter__(self) -> Iterator[Member]:
        pax: dict[str, str] | None = None
        pax_at = 0
        while True:
            self._skip_rest()
            start = self._r.offset
            header = self._r.read(BLOCK)
            if len(header) < BLOCK:
                where = "a header" if header else "its end-of-archive marker"
                raise TarError(f"tar ends without {where} (byte {start + len(header)})")
            if header == bytes(BLOCK):
                if pax is not None:
                    raise TarError(f"pax header at byte {pax_at} is followed by the end of "
                                   f"the archive, not by a member")
                self._check_end(start)
                return
            flag, name, size = _parse_header(header, start)
            if flag == _PAX:
                if pax is not None:
                    # Go keeps only the last of two pax headers, tarfile merges them keeping
                    # the first's values: the member would have two names or two sizes.
                    raise TarError(f"second pax header in a row at byte {start} (the first "
                                   f"is at byte {pax_at}): readers merge them differently")
                if size > _MAX_EXTENDED:
                    raise TarError(f"pax header of {size} bytes at byte {start}, more than "
                                   f"{_MAX_EXTENDED}")
                data = self._r.exact(size, f"the pax header at byte {start}")
                self._padding(-size % BLOCK, start)
                pax, pax_at = _parse_pax(data, start), start
                continue
            kind = _KINDS[flag]
            if pax is not None:
                name, size = _apply_pax(pax, pax_at, name, size, start)
                pax = None
            _check_member(kind, name, size, start)
            self._left = size  # a directory's is 0: _check_member refuses any other
            self._pad = -self._left % BLOCK
            yield Member(name, kind, size, start)

    def read_data(self, n: int = -1) -> bytes:
        """The next bytes of the current member's data (b"" at its end, and for n == 0)."""
        if self._left <= 0 or n == 0:
            return b""  # read(0) from the stream would be b"", taken for a truncated tar
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
            self._padding(self._pad, None)
            self._pad = 0

    def _padding(self, n: int, header: int | None) -> None:
        # No reader looks at padding; zeros are required so that every byte is accounted for.
        at = self._r.offset
        data = self._r.exact(n, "padding")
        if data.count(0) != n:
            whose = f" of the pax header at byte {header}" if header is not None else ""
            raise TarError(f"padding{whose} is not zeros (byte {at + _first_nonzero(data)})")

    def _check_end(self, start: int) -> None:
        # One zero block was read; a second must follow (as every writer puts it), then
        # nothing but zeros: Go stops at the marker, so bytes after it are never imported.
        zeros = 0
        while True:
            data = self._r.read(self._chunk)
            if not data:
                break
            if data.count(0) != len(data):
                at = self._r.offset - len(data) + _first_nonzero(data)
                raise TarError(f"data after the end of the tar archive (byte {at}; the "
                               f"end-of-archive marker is at byte {start})")
            zeros += len(data)
            if zeros > _MAX_END:
                raise TarError(f"more than {_MAX_END} bytes of zeros after the end-of-archive "
                               f"marker at byte {start}")
        if zeros < BLOCK:
            raise TarError(f"tar ends inside its end-of-archive marker (byte {start}: one "
                           f"zero block, not two)")


def _first_nonzero(data: bytes) -> int:
    return len(data) - len(data.lstrip(b"\0"))


def _parse_header(h: bytes, at: int) -> tuple[bytes, str, int]:
    """The typeflag, full name and size of a header block, or TarError."""
    chksum = _octal(h[148:156], "chksum", at)
    unsigned = sum(h[:148]) + 8 * 32 + sum(h[156:])
    if chksum != unsigned:
        # Go (and tarfile) also accept the signed sum; no writer we accept produces one, and
        # a header whose bytes are all ASCII has equal sums.
        raise TarError(f"header checksum mismatch at byte {at}")
    magic = h[257:265]
    if magic[:6] != _MAGIC or magic[6:] != _VERSION:
        # Go reads a GNU header without its prefix field and a V7 one without owner names,
        # other readers apply them: refuse both.
        what = "GNU" if magic == _GNU_MAGIC else "non-POSIX (V7 or unknown)"
        raise TarError(f"{what} tar header at byte {at} (magic {magic!r}); only POSIX "
                       f"ustar/pax headers are accepted")
    if h[500:512] != bytes(12):
        # Go treats "tar\0" at byte 508 as a star header with a shorter prefix field.
        raise TarError(f"header at byte {at}: bytes 500-511 are not zeros")
    flag = h[156:157]
    if flag != _PAX and flag not in _KINDS:
        what = _REFUSED.get(flag, "unknown type")
        raise TarError(f"{what} not allowed in a bundle (typeflag {flag.decode('latin-1')!r} in "
                       f"the header at byte {at})")
    fields = {what: _string(h[start:end], what, at) for what, start, end in _STRINGS}
    numbers = {what: _number(h[start:end], what, at) for what, start, end in _NUMBERS}
    if fields["linkname"]:
        raise TarError(f"header at byte {at}: link name {fields['linkname']!r} on a member "
                       f"that is not a link")
    # Go joins the prefix only when it is not empty (reader.go readHeader), as tarfile does.
    name = fields["name"]
    if fields["prefix"]:
        name = fields["prefix"] + "/" + name
    return flag, name, numbers["size"]


def _octal(field: bytes, what: str, at: int) -> int:
    m = _OCTAL.fullmatch(field)
    if not m:
        raise TarError(f"bad {what} field {field!r} in the header at byte {at}: not octal "
                       f"digits padded with blanks or NULs")
    return int(m.group(1), 8)


def _number(field: bytes, what: str, at: int) -> int:
    if field[0] & 0x80:
        # Base-256: Go takes the low bits of the first byte too and makes 0xc0-0xff negative;
        # tarfile knows only 0x80 and 0xff. Both read 0x80 alike.
        value = int.from_bytes(field[1:], "big")
        if field[0] != 0x80 or value >= _INT64_LIMIT:
            raise TarError(f"bad base-256 {what} field {field!r} in the header at byte {at}")
        return value
    if what in ("devmajor", "devminor") and field == bytes(len(field)):
        return 0  # some writers leave them empty; Go and tarfile both read 0
    return _octal(field, what, at)


def _string(field: bytes, what: str, at: int) -> str:
    text, nul, rest = field.partition(b"\0")
    if rest.count(0) != len(rest):
        # Go and tarfile stop at the first NUL; what follows it would be a hidden second text.
        raise TarError(f"{what} field in the header at byte {at} has bytes after its NUL "
                       f"terminator ({quoted(field.rstrip(bytes(1)))})")
    if not _PRINTABLE.fullmatch(text):
        raise TarError(f"{what} field in the header at byte {at} is not printable ASCII "
                       f"({quoted(text)})")
    return text.decode("ascii")


def _parse_pax(data: bytes, at: int) -> dict[str, str]:
    """The records of a pax header, framed exactly as Go's parsePAXRecord wants them and
    limited to the keys whose meaning every reader agrees on."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        where = f"pax header at byte {at}: record at byte {at + BLOCK + pos}"
        m = _PAX_LENGTH.match(data, pos)
        if not m:
            raise TarError(f"{where}: no decimal length and space")
        end = pos + int(m.group(1))
        # One test covers a length past the data (the slice is empty) and one that ends
        # inside the length field itself (a digit or the space is there, never a newline).
        if data[end - 1:end] != b"\n":
            raise TarError(f"{where}: its length does not end it with a newline")
        body = data[m.end():end - 1]
        if b"\0" in body:
            raise TarError(f"{where}: NUL in the record")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise TarError(f"{where}: not UTF-8") from None
        key, eq, value = text.partition("=")
        if not eq or not key:
            raise TarError(f"{where}: not key=value")
        if key not in ("path", "size"):
            # Anything else either means nothing to containerd or is read differently
            # (mtime: Go rejects "1e3" or " 1", tarfile's float() reads them; uid/gid/size:
            # tarfile reads a bad number as 0; GNU.sparse.*: Go makes the file sparse;
            # hdrcharset: tarfile changes how it decodes names; linkpath: no links here).
            raise TarError(f"{where}: pax key {quoted(key)} not allowed (only path and size)")
        if key in records:
            raise TarError(f"{where}: second {key!r} record")
        if not value:
            # Go keeps the header's value for an empty record, tarfile takes the empty one.
            raise TarError(f"{where}: empty {key!r} value")
        records[key] = value
        pos = end
    return records


def _apply_pax(pax: dict[str, str], pax_at: int, name: str, size: int, at: int
               ) -> tuple[str, int]:
    where = f"pax header at byte {pax_at} (for the header at byte {at})"
    if "path" in pax:
        name = pax["path"]
        if _CONTROL.search(name):
            raise TarError(f"{where}: control character in path {quoted(name)}")
        if len(name) <= _NAME_FIELD and _PRINTABLE.fullmatch(name.encode()):
            # Writers use the record only for names the header cannot hold; a reader that
            # skips pax records would take the header's name instead.
            raise TarError(f"{where}: path record {name!r} fits the header's name field")
    if "size" in pax:
        value = pax["size"]
        if not _DECIMAL.fullmatch(value) or int(value) >= _INT64_LIMIT:
            raise TarError(f"{where}: bad size {quoted(value)}")
        # Writers use the record only for sizes the octal field cannot hold, and then put
        # 0 there; a reader that skips pax records must not see a different, plausible size.
        if int(value) < _OCTAL_SIZE_LIMIT or size != 0:
            raise TarError(f"{where}: size record {value} where the header field could "
                           f"hold it (header says {size})")
        size = int(value)
    return name, size


def _check_member(kind: str, name: str, size: int, at: int) -> None:
    if not name:
        raise TarError(f"member without a name (header at byte {at})")
    if kind == DIRECTORY and size:
        raise TarError(f"directory {quoted(name)} with a size of {size} (header at byte {at})")
    if kind == REGULAR and name.endswith("/"):
        # tarfile strips the slash of a pax path, Go keeps it, containerd cleans it away.
        raise TarError(f"file {quoted(name)} ends with '/' (header at byte {at})")
