"""The files that vouch for a bundle: `<name>.manifest.json` and `sha256sum-<arch>.txt`,
written by build and read back by verify (one module for both halves of the format).

sha256sum-<arch>.txt has `<hex>  <basename>` lines so `sha256sum -c` works in the output
directory, as for K3s and RKE2 release files; entries for other files already there are kept.

Read back, both are untrusted: a checksum manifest found beside a bundle (not one given by
path) and sha256sum files are never read through a symlink, each is capped in size, and the
manifest is JSON read as Go reads it (strictjson).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bundler import __version__, localfile, platform, reference, strictjson
from bundler.errors import InputError
from bundler.strictjson import object_or_empty, shown

if TYPE_CHECKING:
    from bundler.image import Image
    from bundler.platform import Platform

SCHEMA_VERSION = 1
BUNDLE_SUFFIX = ".tar.zst"
# A sha256sum file has a line of ~100 bytes per file; K3s's release assets list a few dozen.
MAX_SUMS = 1 << 20
# The checksum manifest of a few hundred images is well under 1 MiB.
MAX_CHECKSUM_MANIFEST = 4 << 20
_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")

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
) -> dict:
    """The checksum manifest; `upstream` are the images as pulled, `images` as bundled."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "tool": f"bundler {__version__}",
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
            from bundler import signing  # cryptography is loaded only to check a signature

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


def check_images(doc: dict, in_bundle: dict[str, object], layers_of: LayersOf) -> list[str]:
    """Problems between the images the checksum manifest records and `in_bundle` (image name
    -> the manifest digest index.json gives it, as found): each image in both, with the same
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
        if not isinstance(digest, str):
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
