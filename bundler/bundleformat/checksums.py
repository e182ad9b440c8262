"""The files that vouch for a bundle: `<name>.manifest.json` and `sha256sum-<arch>.txt`,
written by build and read back by verify (one module for both halves of the format).

sha256sum-<arch>.txt has `<hex>  <basename>` lines so `sha256sum -c` works in the output
directory, as for K3s and RKE2 release files; entries for other files already there are kept.

Read back, both are untrusted: a checksum manifest found beside a bundle (not one given by
path) and sha256sum files are never read through a symlink, each is capped in size, and the
manifest is JSON read as Go reads it (strictjson).

A signed manifest vouches for one file name and, when the build had $SOURCE_DATE_EPOCH, for
one date: check_signed_name and check_not_before hold a bundle to them, so a signed bundle
cannot pass as another one renamed, nor an old one as a new one.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bundler import __version__, localfile, platform, reference, strictjson
from bundler.errors import BundlerError, InputError
from bundler.strictjson import object_or_empty
from bundler.text import shown

if TYPE_CHECKING:
    from bundler.image import Image
    from bundler.platform import Platform

# sourceDateEpoch was added without a new schemaVersion: it is optional (a manifest without it
# is undated, as every one written before it was), and a reader that does not know it loses
# nothing by ignoring it, while a new schemaVersion would make every older verify refuse
# manifests it can check in full. A signature covers the field like every other byte.
SCHEMA_VERSION = 1
BUNDLE_SUFFIX = ".tar.zst"
# A sha256sum file has a line of ~100 bytes per file; K3s's release assets list a few dozen.
MAX_SUMS = 1 << 20
# The checksum manifest of a few hundred images is well under 1 MiB.
MAX_CHECKSUM_MANIFEST = 4 << 20
_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
# $SOURCE_DATE_EPOCH as reproducible-builds.org/specs/source-date-epoch defines it: the
# decimal integer `date +%s` prints, no sign, fraction or blanks; at most 9999-12-31T23:59:59Z.
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
LAST_EPOCH = 253402300799
_EPOCH = re.compile(r"[0-9]{1,12}")

# (config digest, [{"digest", "size"}] of the layers) of a manifest in the bundle, or None
# when the bundle's own checks found it wrong (they say why).
LayersOf = Callable[[str], "tuple[str, list[dict]] | None"]


def manifest_document(
    images: Sequence[Image],
    upstream: Sequence[Image],
    *,
    arch: str,
    layers: str,
    level: int,
    window_log: int,
    bundle_file: str,
    bundle_size: int,
    bundle_sha256: str,
    source_date_epoch: int | None = None,
) -> dict:
    """The checksum manifest; `upstream` are the images as pulled, `images` as bundled.
    `source_date_epoch` (see source_date_epoch()) dates it; without it, it is undated."""
    dated = {} if source_date_epoch is None else {"sourceDateEpoch": source_date_epoch}
    return {
        "schemaVersion": SCHEMA_VERSION,
        "tool": f"bundler {__version__}",
        **dated,
        "arch": arch,
        "layers": layers,
        "compression": {"format": "zstd", "level": level, "windowLog": window_log},
        "bundle": {"file": bundle_file, "size": bundle_size, "sha256": bundle_sha256},
        "images": [_image_entry(i, u) for i, u in zip(images, upstream, strict=True)],
    }


def _image_entry(image: Image, upstream: Image) -> dict:
    return {
        "reference": str(image.reference),
        "indexDigest": image.index_digest,
        "manifestDigest": image.manifest_digest,
        "upstreamManifestDigest": upstream.upstream_digest or upstream.manifest_digest,
        "configDigest": image.config_descriptor.digest,
        "platform": str(image.platform),
        "layers": [
            {"digest": layer.descriptor.digest, "diffID": layer.diff_id,
             "size": layer.descriptor.size}
            for layer in image.layers
        ],
    }


def dumps_manifest(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode()


def source_date_epoch(environ: Mapping[str, str] | None = None) -> int | None:
    """$SOURCE_DATE_EPOCH in seconds; None when unset or empty (the spec leaves that case to
    the tool: the manifest is then undated). InputError for any other value that is not the
    decimal integer `date +%s` prints, as the spec asks a tool to fail on a malformed one."""
    value = (os.environ if environ is None else environ).get(SOURCE_DATE_EPOCH)
    if not value:
        return None
    if not _EPOCH.fullmatch(value) or int(value) > LAST_EPOCH:
        raise InputError(f"{SOURCE_DATE_EPOCH}={value[:40]!r}: want whole seconds since "
                         f"1970-01-01 UTC, as `date +%s` prints them (at most {LAST_EPOCH}, "
                         "the end of the year 9999)")
    return int(value)


def read_sums(path: Path, *, follow_symlinks: bool = True) -> dict[str, str]:
    """basename -> hex from a sha256sum file; a missing file is empty. InputError for one that
    is not a regular file, is larger than MAX_SUMS, or is not UTF-8."""
    try:
        data = localfile.read_small(path, MAX_SUMS, "sha256sum file",
                                    follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text, not a sha256sum file") from None
    sums = {}
    for line in text.splitlines():
        m = _SUM_LINE.match(line)
        if m:
            sums[m.group(2)] = m.group(1)
    return sums


def merged_sums(existing: dict[str, str], ours: dict[str, str]) -> bytes:
    """The sha256sum file text with our entries replacing any of the same names, sorted."""
    merged = {**existing, **ours}
    return "".join(f"{merged[name]}  {name}\n" for name in sorted(merged)).encode()


# -- reading them back (verify) ---------------------------------------------------------------


class RenamedBundle(BundlerError):
    """A bundle whose signed checksum manifest was written for a file of another name (exit 1):
    another bundle signed with the same key, renamed, would otherwise pass as this one."""


class TooOld(BundlerError):
    """A checksum manifest dated before the earliest date the caller accepts, or undated
    (exit 1): a bundle signed long ago, with images since found vulnerable, is still signed."""


_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[Tt ]([0-9]{2}):([0-9]{2})"
                   r"(?::([0-9]{2})(?:[.,]([0-9]{1,6}))?)?([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?")


def parse_time(text: str) -> datetime.datetime:
    """An ISO 8601 date (2026-01-31, its midnight) or date-time (2026-01-31T12:00,
    ...T12:00:00.5Z, ...T12:00:00+01:00), UTC when no zone is given; InputError otherwise."""
    m = _TIME.fullmatch(text)
    try:
        if not m:
            raise ValueError
        year, month, day, hour, minute, second, fraction, zone = m.groups()
        tz = datetime.timezone.utc
        if zone and zone.upper() != "Z":
            digits = zone[1:].replace(":", "")
            offset = datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
            tz = datetime.timezone(-offset if zone[0] == "-" else offset)
        when = datetime.datetime(int(year), int(month), int(day), int(hour or 0),
                                 int(minute or 0), int(second or 0),
                                 int((fraction or "0").ljust(6, "0")), tzinfo=tz)
        # In range once in UTC too (0001-01-01T00:00+01:00 is not), so comparing it and
        # showing it cannot overflow later.
        when.astimezone(datetime.timezone.utc).timestamp()
        return when
    except (ValueError, OverflowError):
        raise InputError("want an ISO 8601 date or date-time, such as 2026-01-31, "
                         "2026-01-31T12:00:00Z or 2026-01-31T12:00:00+01:00 (UTC when no "
                         "zone is given)") from None


def shown_time(when: datetime.datetime | int) -> str:
    """A time (or seconds since 1970) as ISO 8601 in UTC: 2026-01-31T12:00:00Z."""
    if isinstance(when, int):
        when = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc).replace(tzinfo=None).isoformat() + "Z"


def recorded_epoch(doc: dict) -> int | None:
    """The checksum manifest's sourceDateEpoch (seconds since 1970, UTC), None when it has
    none; ValueError, its message one line, for a value that is not one."""
    if "sourceDateEpoch" not in doc:
        return None
    value = doc["sourceDateEpoch"]
    if type(value) is not int or not 0 <= value <= LAST_EPOCH:
        raise ValueError(f"checksum manifest: bad sourceDateEpoch {shown(value)}: want whole "
                         "seconds since 1970-01-01 UTC")
    return value


def check_signed_name(doc: dict, bundle: Path) -> None:
    """RenamedBundle unless the signed checksum manifest `doc` was written for a file named
    as `bundle` is: the signature vouches for the name as for the bytes."""
    signed = object_or_empty(doc.get("bundle")).get("file")
    if signed != bundle.name:
        raise RenamedBundle(f"{bundle}: the signed checksum manifest is for a file named "
                            f"{shown(signed)}, not {shown(bundle.name)}")


def check_not_before(doc: dict | None, where: str, not_before: datetime.datetime) -> None:
    """TooOld unless the checksum manifest `doc` (read from `where`) records a
    sourceDateEpoch at or after `not_before`."""
    earliest = shown_time(not_before)
    if doc is None:
        raise TooOld(f"{where}: no checksum manifest, so no date to compare with {earliest}")
    try:
        recorded = recorded_epoch(doc)
    except ValueError as e:
        raise TooOld(f"{where}: {e}") from None
    if recorded is None:
        raise TooOld(f"{where}: undated (built without {SOURCE_DATE_EPOCH}), so not shown to "
                     f"be from {earliest} or later")
    if recorded < not_before.timestamp():
        raise TooOld(f"{where}: dated {shown_time(recorded)}, before {earliest}, the earliest "
                     "accepted")


def stem(bundle: Path) -> str:
    """The bundle's name without .tar.zst: what its checksum manifest is named after."""
    name = bundle.name
    return name[: -len(BUNDLE_SUFFIX)] if name.endswith(BUNDLE_SUFFIX) else bundle.stem


def read_manifest(bundle: Path, given: str | Path | None = None,
                  key: str | Path | None = None) -> tuple[dict, Path] | None:
    """The checksum manifest `given`, or the one beside `bundle` (None when there is none),
    and the path it was read from. With `key`, it must be signed with that public key
    (signing.SignatureInvalid otherwise), and what is returned is exactly what the signature
    covers. InputError when it cannot be read or is not a checksum manifest."""
    candidate = Path(given) if given else bundle.with_name(stem(bundle) + ".manifest.json")
    try:
        if key is not None:
            from bundler.bundleformat import (
                signing,  # cryptography is loaded only to check a signature
            )

            if not given and not os.path.lexists(candidate):
                raise signing.SignatureInvalid(
                    f"{bundle.name}: no checksum manifest {candidate.name} beside it to check "
                    "the signature of")
            data = signing.verify_file(candidate, key, signed_found=given is None)
        else:
            # One we found beside the bundle is never read through a symlink.
            data = localfile.read_small(candidate, MAX_CHECKSUM_MANIFEST, "checksum manifest",
                                        follow_symlinks=given is not None)
    except FileNotFoundError:
        if given:
            raise InputError(f"{candidate}: no such checksum manifest") from None
        return None
    except OSError as e:
        raise InputError(f"{candidate}: cannot read ({e.strerror})") from None
    try:
        doc = strictjson.loads(data)
    except strictjson.StrictJSONError as e:
        raise InputError(f"{candidate}: not JSON ({e}); not a checksum manifest") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != SCHEMA_VERSION:
        raise InputError(f"{candidate}: not a bundler checksum manifest (schemaVersion 1)")
    return doc, candidate


def sums_beside(bundle: Path) -> dict[str, str]:
    """sha256sum file -> the hex it gives for `bundle`, for the sha256sum-*.txt files beside
    it that list it (never read through a symlink)."""
    found = {}
    for sums in sorted(bundle.parent.glob("sha256sum-*.txt")):
        entries = read_sums(sums, follow_symlinks=False)
        if bundle.name in entries:
            found[str(sums)] = entries[bundle.name]
    return found


def check_file(bundle: Path, size: int, sha256: str, doc: dict | None, sums: dict[str, str],
               *, require_checksum: bool = False) -> tuple[list[str], list[str]]:
    """(problems, notes): the bundle's size and sha256 against every checksum file that
    vouches for it. With none, a note, or with `require_checksum` a problem."""
    problems, notes = [], []
    for source, hex_digest in sums.items():
        if hex_digest != sha256:
            problems.append(f"{bundle.name}: sha256 is {sha256}, {Path(source).name} says "
                            f"{hex_digest}")
    if doc is not None:
        recorded = object_or_empty(doc.get("bundle"))
        if recorded.get("sha256") != sha256 or recorded.get("size") != size:
            problems.append(
                f"{bundle.name}: {size} bytes with sha256 {sha256}, the checksum manifest says "
                f"{shown(recorded.get('size'))} bytes with sha256 "
                f"{shown(recorded.get('sha256'))}")
    if doc is None and not sums:
        if require_checksum:
            problems.append(f"{bundle.name}: no checksum file vouches for it (looked for "
                            f"{stem(bundle)}.manifest.json and sha256sum-*.txt beside it)")
        else:
            notes.append(f"no checksum file beside {bundle.name}: checked its content only")
    return problems, notes


def platform_of(doc: dict | None) -> Platform | None:
    """The platform the checksum manifest's `arch` names (None without one); InputError
    naming the bad value."""
    if not doc or "arch" not in doc:
        return None
    try:
        if not isinstance(doc["arch"], str):
            raise InputError("not a string")
        return platform.for_arch(doc["arch"])
    except InputError:
        raise InputError(f"checksum manifest: bad arch {shown(doc['arch'])}") from None


def check_images(doc: dict, in_bundle: Mapping[str, str | None], layers_of: LayersOf
                 ) -> list[str]:
    """Problems between the images the checksum manifest records and `in_bundle` (image name
    -> the manifest digest index.json gives it, None where its entry does not read: the
    bundle's own metadata, metadata.Metadata.by_name): each image in both, with the same
    manifest and config digests and the same layers (digest and size)."""
    recorded = doc.get("images")
    if not isinstance(recorded, list):
        return ["checksum manifest: no images list"]
    problems: list[str] = []
    seen = set()
    layer_lists: dict[str, tuple[str, list[dict]] | None] = {}  # per manifest digest, once
    for item in recorded:
        name = _recorded_name(item, problems)
        if name is None:
            continue
        if name in seen:
            problems.append(f"checksum manifest: {name} is listed twice")
            continue
        seen.add(name)
        if name not in in_bundle:
            problems.append(f"{name}: in the checksum manifest but not in the bundle")
            continue
        digest = in_bundle[name]
        if digest is None:
            continue  # the bundle's own checks said what is wrong with the entry
        if digest != item.get("manifestDigest"):
            problems.append(f"{name}: manifest digest {shown(digest)}, checksum manifest says "
                            f"{shown(item.get('manifestDigest'))}")
            continue
        if digest not in layer_lists:
            layer_lists[digest] = layers_of(digest)
        if layer_lists[digest] is None:
            continue  # the bundle's own checks said what is wrong with it
        config_digest, have = layer_lists[digest]
        if config_digest != item.get("configDigest"):
            problems.append(f"{name}: config digest {config_digest}, checksum manifest says "
                            f"{shown(item.get('configDigest'))}")
        layers = item.get("layers")
        said = [{"digest": x.get("digest"), "size": x.get("size")}
                for x in (layers if isinstance(layers, list) else []) if isinstance(x, dict)]
        if have != said:
            problems.append(f"{name}: layers differ from the checksum manifest")
    problems += [f"{name}: in the bundle but not in the checksum manifest"
                 for name in sorted(set(in_bundle) - seen)]
    return problems


def _recorded_name(item: object, problems: list[str]) -> str | None:
    """The full image name of one of the manifest's image entries, or None and a problem."""
    if not isinstance(item, dict):
        problems.append("checksum manifest: an image entry is not an object")
        return None
    try:
        if not isinstance(item.get("reference"), str):
            raise InputError("an image entry has no reference")
        return reference.parse(item["reference"]).image_name
    except InputError as e:
        problems.append(f"checksum manifest: {e}")
        return None
