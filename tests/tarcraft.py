"""Hand-made tar headers, for tars no honest writer produces (hostile bundles).

Every helper returns bytes. A header is built from a plain ustar template (what tarfile writes
in PAX_FORMAT for a short ASCII name) and any field can be replaced by raw bytes; the checksum
is recomputed afterwards unless the test sets it itself.
"""

from __future__ import annotations

import io
import re
import tarfile

BLOCK = 512
END = bytes(2 * BLOCK)

# name -> (start, end) of each ustar header field
FIELDS = {
    "name": (0, 100), "mode": (100, 108), "uid": (108, 116), "gid": (116, 124),
    "size": (124, 136), "mtime": (136, 148), "chksum": (148, 156), "typeflag": (156, 157),
    "linkname": (157, 257), "magic": (257, 263), "version": (263, 265),
    "uname": (265, 297), "gname": (297, 329), "devmajor": (329, 337),
    "devminor": (337, 345), "prefix": (345, 500), "pad": (500, 512),
}


def octal(value: int, width: int) -> bytes:
    """A numeric field as tarfile writes it: zero-padded octal digits and one NUL."""
    return b"%0*o\0" % (width - 1, value)


def checksum(block: bytes) -> bytes:
    """The chksum field for `block` as writers put it: six octal digits, NUL, blank."""
    total = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    return b"%06o\0 " % total


def put(block: bytes, field: str, value: bytes, *, rechecksum: bool = True) -> bytes:
    """`block` with `field` replaced by `value` (NUL-padded to the field's width)."""
    start, end = FIELDS[field]
    if len(value) > end - start:
        raise ValueError(f"{field}: {len(value)} bytes do not fit in {end - start}")
    out = block[:start] + value.ljust(end - start, b"\0") + block[end:]
    if rechecksum and field != "chksum":
        out = out[:148] + checksum(out) + out[156:]
    return out


def header(name: str | bytes, length: int = 0, typeflag: bytes = b"0", **fields: bytes
           ) -> bytes:
    """A ustar header block for `length` bytes of data; `fields` replace fields by raw bytes
    (then the checksum is redone, unless chksum is among them)."""
    raw_name = name.encode() if isinstance(name, str) else name
    block = bytearray(BLOCK)
    block[0:len(raw_name)] = raw_name
    block[100:108] = octal(0o755 if typeflag == b"5" else 0o644, 8)
    block[108:116] = octal(0, 8)
    block[116:124] = octal(0, 8)
    block[124:136] = octal(length, 12)
    block[136:148] = octal(0, 12)
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[329:337] = octal(0, 8)
    block[337:345] = octal(0, 8)
    out = bytes(block)
    for field, value in fields.items():
        if field != "chksum":
            out = put(out, field, value, rechecksum=False)
    out = out[:148] + checksum(out) + out[156:]
    if "chksum" in fields:
        out = put(out, "chksum", fields["chksum"])
    return out


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def member(name: str | bytes, data: bytes = b"", typeflag: bytes = b"0", **fields: bytes
           ) -> bytes:
    """A member: header, data, padding."""
    length = 0 if typeflag == b"5" else len(data)
    return header(name, length, typeflag, **fields) + padded(data)


def record(key: str, value: str | bytes) -> bytes:
    """One pax record, "%d key=value\\n", with its exact length."""
    body = b" " + key.encode() + b"=" + (value.encode() if isinstance(value, str) else value) \
        + b"\n"
    n = len(body) + 1
    while len(str(n).encode() + body) != n:
        n += 1
    return str(n).encode() + body


def pax(records: bytes, **fields: bytes) -> bytes:
    """A pax extended header ('x') carrying `records` (already formatted), with padding."""
    return header(b"././@PaxHeader", len(records), b"x", **fields) + padded(records)


def tarfile_archive(entries: list[tuple[str, bytes | None]], **info: object) -> bytes:
    """What tarfile writes in PAX_FORMAT, as archive.py uses it: (name, data) are files,
    (name, None) directories. `info` sets TarInfo attributes on every member."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 0
            ti.uname = ti.gname = ""
            for k, v in info.items():
                setattr(ti, k, v)
            if data is None:
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


# -- how Go's archive/tar reads a tar -----------------------------------------------------------
# A model of src/archive/tar/reader.go (Next, readHeader, parsePAX, mergePAX) and strconv.go
# (parseNumeric, parseOctal, parsePAXRecord), written from Go's source so the property tests
# can compare TarStream with what containerd's reader would see. Sparse files are not
# modelled: they raise GoUnmodelled, and TarStream refuses them anyway.

class GoError(Exception):
    """Go's reader returns an error here (ErrHeader, ErrUnexpectedEOF, ErrFieldTooLong)."""


class GoUnmodelled(GoError):
    """A feature of Go's reader this model leaves out (sparse files)."""


_ZERO = bytes(BLOCK)
_MAX_SPECIAL = 1 << 20
_HEADER_ONLY = b"123456"  # isHeaderOnlyType: links, devices, directories, fifos


def _go_string(b: bytes) -> bytes:
    return b.split(b"\0", 1)[0]


def _go_parse_uint8(s: bytes) -> int:
    if not s or any(c not in b"01234567" for c in s) or int(s, 8) >= 1 << 64:
        raise GoError("ParseUint")
    return int(s, 8)


def _go_octal(b: bytes) -> int:
    b = b.strip(b" \0")
    if not b:
        return 0
    value = _go_parse_uint8(_go_string(b))
    return value - (1 << 64) if value >= 1 << 63 else value


def _go_numeric(b: bytes) -> int:
    if b[0] & 0x80:
        inv = 0xFF if b[0] & 0x40 else 0
        x = 0
        for i, c in enumerate(b):
            c ^= inv
            if i == 0:
                c &= 0x7F
            if x >> 56:
                raise GoError("base-256 overflow")
            x = x << 8 | c
        if x >> 63:
            raise GoError("base-256 overflow")
        return ~x if inv else x
    return _go_octal(b)


def _go_parse_int10(s: str) -> int:
    # strconv.ParseInt(s, 10, 64): one optional sign, ASCII digits; no "_" (base is not 0).
    if not re.fullmatch(r"[+-]?[0-9]+", s):
        raise GoError("ParseInt")
    # Go accepts any number of leading zeros; past them, more than 19 digits overflow int64
    # (and int() of more than 4300 digits raises ValueError, which no GoError catches).
    digits = s.lstrip("+-").lstrip("0")
    if len(digits) > 19:
        raise GoError("ParseInt range")
    value = -int(digits or "0") if s[0] == "-" else int(digits or "0")
    if not -(1 << 63) <= value < 1 << 63:
        raise GoError("ParseInt range")
    return value


def _go_pax_time(s: str) -> None:
    secs, _, frac = s.partition(".")
    _go_parse_int10(secs)
    if frac and frac.strip("0123456789"):
        raise GoError("pax time")


def _go_read_header(blk: bytes) -> dict:
    unsigned = sum(blk) - sum(blk[148:156]) + 8 * 32
    signed = sum(c - 256 if c > 127 else c for c in blk[:148] + blk[156:]) + 8 * 32
    if _go_octal(blk[148:156]) not in (unsigned, signed):
        raise GoError("checksum")
    magic, version, trailer = blk[257:263], blk[263:265], blk[508:512]
    if magic == b"ustar\0":
        fmt = "star" if trailer == b"tar\0" else "ustar"
    elif magic == b"ustar " and version == b" \0":
        fmt = "gnu"
    else:
        fmt = "v7"
    hdr = {"flag": blk[156:157], "name": _go_string(blk[0:100]), "fmt": fmt,
           "linkname": _go_string(blk[157:257]), "size": _go_numeric(blk[124:136])}
    for start, end in ((100, 108), (108, 116), (116, 124), (136, 148)):
        _go_numeric(blk[start:end])
    if fmt == "v7":
        return hdr
    _go_numeric(blk[329:337])
    _go_numeric(blk[337:345])
    prefix = b""
    if fmt == "ustar":
        prefix = _go_string(blk[345:500])
    elif fmt == "star":
        prefix = _go_string(blk[345:476])
        _go_numeric(blk[476:488])
        _go_numeric(blk[488:500])
    else:
        try:
            if blk[345]:
                _go_numeric(blk[345:357])
            if blk[357]:
                _go_numeric(blk[357:369])
        except GoError:  # a pre-Go 1.8 writer's prefix in a GNU header (golang.org/issue/12594)
            s = _go_string(blk[345:500])
            prefix = s if all(c < 0x80 for c in s) else b""
    if prefix:
        hdr["name"] = prefix + b"/" + hdr["name"]
    return hdr


def _go_pax_records(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    s = data
    while s:
        n_str, sp, rest = s.partition(b" ")
        if not sp:
            raise GoError("pax record")
        n = _go_parse_int10(n_str.decode("latin-1"))
        if n < 5 or n > len(s):
            raise GoError("pax record length")
        n -= len(n_str) + 1
        if n <= 0:
            raise GoError("pax record length")
        rec, nl, s = rest[:n - 1], rest[n - 1:n], rest[n:]
        if nl != b"\n":
            raise GoError("pax record newline")
        k, eq, v = rec.partition(b"=")
        if not eq or not k:
            raise GoError("pax record key")
        if (b"\0" in v) if k in (b"path", b"linkpath", b"uname", b"gname") else b"\0" in k:
            raise GoError("pax record NUL")
        if k in (b"GNU.sparse.offset", b"GNU.sparse.numbytes"):
            raise GoUnmodelled("sparse")
        records[k] = v
    return records


def _go_merge_pax(hdr: dict, pax: dict[bytes, bytes]) -> None:
    for k, v in pax.items():
        if not v:
            continue
        text = v.decode("utf-8", "surrogateescape")
        if k == b"path":
            hdr["name"] = v
        elif k == b"linkpath":
            hdr["linkname"] = v
        elif k in (b"uid", b"gid"):
            _go_parse_int10(text)
        elif k in (b"atime", b"mtime", b"ctime"):
            _go_pax_time(text)
        elif k == b"size":
            hdr["size"] = _go_parse_int10(text)
        if k.startswith(b"GNU.sparse."):
            raise GoUnmodelled("sparse")


def go_read(tar: bytes) -> list[tuple[bytes, bytes, int, bytes]]:
    """(name, typeflag, size, data) of each entry Go's tar.Reader returns, in order; raises
    GoError where Go's Next or Read would return an error other than io.EOF."""
    out: list[tuple[bytes, bytes, int, bytes]] = []
    pos = 0
    pax: dict[bytes, bytes] = {}
    long_name = long_link = b""
    while True:
        blk = tar[pos:pos + BLOCK]
        if not blk:
            return out
        if len(blk) < BLOCK:
            raise GoError("unexpected EOF in a header")
        pos += BLOCK
        if blk == _ZERO:
            nxt = tar[pos:pos + BLOCK]
            if not nxt or nxt == _ZERO:
                return out
            raise GoError("zero block then a non-zero block")
        hdr = _go_read_header(blk)
        flag = hdr["flag"]
        if flag in (b"x", b"g", b"L", b"K"):
            nb = hdr["size"]
            if nb < 0:
                raise GoError("negative size")
            if nb > _MAX_SPECIAL:
                raise GoError("field too long")
            data = tar[pos:pos + nb]
            if len(data) < nb:
                raise GoError("unexpected EOF in a special file")
            pos += nb + (-nb % BLOCK)
            if flag in (b"x", b"g"):
                pax = _go_pax_records(data)
                if flag == b"g":
                    out.append((hdr["name"], flag, 0, b""))
                    pax = {}
            elif flag == b"L":
                long_name = _go_string(data)
            else:
                long_link = _go_string(data)
            continue
        if hdr["size"] < 0 and flag not in _HEADER_ONLY:
            raise GoError("negative size")
        _go_merge_pax(hdr, pax)
        if long_name:
            hdr["name"] = long_name
        if long_link:
            hdr["linkname"] = long_link
        if flag == b"\0":
            flag = b"5" if hdr["name"].endswith(b"/") else b"0"
        if flag == b"S":
            raise GoUnmodelled("sparse")
        nb = 0 if flag in _HEADER_ONLY else hdr["size"]
        if nb < 0:
            raise GoError("negative size")
        data = tar[pos:pos + nb]
        if len(data) < nb:
            raise GoError("unexpected EOF in data")
        pos += nb + (-nb % BLOCK)
        out.append((hdr["name"], flag, nb, data))
        pax, long_name, long_link = {}, b"", b""
