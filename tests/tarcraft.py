"""Hand-made tar headers, for tars no honest writer produces (issue 10's hostile bundles).

Every helper returns bytes. A header is built from a plain ustar template (what tarfile writes
in PAX_FORMAT for a short ASCII name) and any field can be replaced by raw bytes; the checksum
is recomputed afterwards unless the test sets it itself.
"""

from __future__ import annotations

import io
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
