"""The files that vouch for a bundle: `<name>.manifest.json` and `sha256sum-<arch>.txt`.

sha256sum-<arch>.txt has `<hex>  <basename>` lines so `sha256sum -c` works in the output
directory, as for K3s and RKE2 release files; entries for other files already there are kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from bundler import __version__, localfile
from bundler.errors import InputError
from bundler.image import Image

SCHEMA_VERSION = 1
# A sha256sum file has a line of ~100 bytes per file; K3s's release assets list a few dozen.
MAX_SUMS = 1 << 20
_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


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
