"""A software bill of materials beside the bundle: `NAME-ARCH.spdx.json`, SPDX 2.3 JSON.

It is made from the checksum manifest alone, so it says exactly what the manifest vouches for:
the bundle file (its sha256) CONTAINS one package per image, each with its manifest digest as
checksum and a `pkg:oci` purl (purl-spec types/oci: name = last path segment, version = the
digest, qualifiers arch, repository_url, tag). The document DESCRIBES the bundle.

Deterministic like every other output: no wall clock. `created` is $SOURCE_DATE_EPOCH when
set (reproducible-builds.org's convention, what release pipelines already export), else
1970-01-01T00:00:00Z: the bundle itself carries no time (its tar members have mtime 0), so
there is no truer one to give. documentNamespace is derived from the bundle's sha256, so two
different bundles never share one and the same bundle always gets the same.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from urllib.parse import quote

from bundler import __version__, reference
from bundler.bundleformat import checksums

SUFFIX = ".spdx.json"
NAMESPACE_BASE = "https://spdx.org/spdxdocs/bundler"
_NOASSERTION = "NOASSERTION"
_SPDX_ID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def file_name(bundle_file: str) -> str:
    """`NAME-ARCH.spdx.json` for `NAME-ARCH.tar.zst`."""
    stem = bundle_file[: -len(".tar.zst")] if bundle_file.endswith(".tar.zst") else bundle_file
    return stem + SUFFIX


def created_time(environ: Mapping[str, str] | None = None) -> str:
    """SPDX `created`: $SOURCE_DATE_EPOCH (read as the checksum manifest reads it, which
    records it too) or the epoch."""
    seconds = checksums.source_date_epoch(environ) or 0
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def document(manifest: dict, *, created: str | None = None) -> dict:
    """The SPDX 2.3 document for the bundle a checksum manifest describes.

    `manifest` is what checksums.manifest_document returns (bundle.file, bundle.sha256,
    bundle.size, arch, images[].reference/manifestDigest/upstreamManifestDigest/platform).
    """
    bundle = manifest["bundle"]
    bundle_id = "SPDXRef-Package-bundle"
    packages = [{
        "SPDXID": bundle_id,
        "name": bundle["file"],
        "packageFileName": bundle["file"],
        "versionInfo": f"sha256:{bundle['sha256']}",
        "downloadLocation": _NOASSERTION,
        "filesAnalyzed": False,
        "checksums": [{"algorithm": "SHA256", "checksumValue": bundle["sha256"]}],
        "primaryPackagePurpose": "ARCHIVE",
        "licenseConcluded": _NOASSERTION,
        "licenseDeclared": _NOASSERTION,
        "copyrightText": _NOASSERTION,
        "comment": f"K3s airgap image bundle (zstd-compressed image tarball) for "
                   f"linux/{manifest.get('arch', 'unknown')}, {bundle['size']} bytes, "
                   f"{len(manifest['images'])} images",
    }]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                      "relatedSpdxElement": bundle_id}]
    for i, image in enumerate(manifest["images"], 1):
        package = _image_package(i, image)
        packages.append(package)
        relationships.append({"spdxElementId": bundle_id, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": package["SPDXID"]})
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": bundle["file"],
        "documentNamespace": namespace(bundle["file"], bundle["sha256"]),
        "creationInfo": {"created": created or created_time(),
                         "creators": [f"Tool: bundler-{__version__}"]},
        "packages": packages,
        "relationships": relationships,
    }


def namespace(bundle_file: str, bundle_sha256: str) -> str:
    """A URI unique to this bundle's bytes: SPDX wants one per document, and the same bytes
    should give the same document."""
    import uuid  # here: every build loads this module, few write an SBOM

    name = _SPDX_ID_UNSAFE.sub("-", bundle_file)
    return f"{NAMESPACE_BASE}/{name}-{uuid.uuid5(uuid.NAMESPACE_URL, 'sha256:' + bundle_sha256)}"


def dumps(doc: dict) -> bytes:
    """The file's bytes: sorted keys would hide SPDX's reading order, so insertion order,
    which document() fixes."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def purl(ref: reference.Reference, digest: str, arch: str | None) -> str:
    """`pkg:oci/NAME@sha256%3AHEX?arch=..&repository_url=..&tag=..`, qualifiers sorted as the
    purl spec's canonical form wants."""
    name = ref.repository.rsplit("/", 1)[-1].lower()
    qualifiers = {"repository_url": ref.name}
    if arch:
        qualifiers["arch"] = arch
    if ref.tag:
        qualifiers["tag"] = ref.tag
    query = "&".join(f"{k}={quote(v, safe='/:')}" for k, v in sorted(qualifiers.items()))
    return f"pkg:oci/{quote(name, safe='')}@{quote(digest, safe='')}?{query}"


def _image_package(index: int, image: dict) -> dict:
    ref = reference.parse(image["reference"])
    digest = image["manifestDigest"]
    platform = image.get("platform") or ""
    arch = platform.split("/")[1] if platform.count("/") >= 1 else None
    package = {
        "SPDXID": f"SPDXRef-Image-{index}-{_SPDX_ID_UNSAFE.sub('-', ref.name)}",
        "name": ref.name,
        "versionInfo": ref.tag or ref.digest or digest,
        "downloadLocation": _NOASSERTION,
        "filesAnalyzed": False,
        "checksums": [{"algorithm": "SHA256", "checksumValue": digest.split(":", 1)[1]}],
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": purl(ref, digest, arch)}],
        "primaryPackagePurpose": "CONTAINER",
        "supplier": _NOASSERTION,
        "licenseConcluded": _NOASSERTION,
        "licenseDeclared": _NOASSERTION,
        "copyrightText": _NOASSERTION,
        "comment": f"image {ref} for {platform}; its manifest digest in the bundle is {digest}",
    }
    upstream = image.get("upstreamManifestDigest")
    if upstream and upstream != digest:
        package["comment"] += (f" (layers stored uncompressed; the registry's manifest is "
                               f"{upstream})")
    return package
