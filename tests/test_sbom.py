"""The SPDX 2.3 SBOM of a bundle: valid against the official schema, deterministic, and true to
the bundle it describes (checked against a real build's file and its OCI index)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import jsonschema
import pytest

from bundler.bundleformat import sbom
from bundler.errors import InputError
from tests.bundlefiles import json_member, plain_tar
from tests.cli_helpers import build_args, bundler, read_manifest
from tests.conftest import REFS, STEM

SCHEMA = json.loads((Path(__file__).parent / "data" / "spdx-2.3-schema.json").read_text())
H = "0123456789abcdef" * 4

MANIFEST = {
    "schemaVersion": 1, "tool": "bundler 0.1.0", "arch": "amd64", "layers": "preserve",
    "compression": {"format": "zstd", "level": 16, "windowLog": 25},
    "bundle": {"file": f"{STEM}.tar.zst", "size": 1234, "sha256": "aa" * 32},
    "images": [
        {"reference": "docker.io/rancher/hardened-multus-cni:v4.3.0-build20260722",
         "indexDigest": "sha256:" + "11" * 32, "manifestDigest": "sha256:" + "22" * 32,
         "upstreamManifestDigest": "sha256:" + "22" * 32, "configDigest": "sha256:" + H,
         "platform": "linux/amd64", "layers": []},
        {"reference": "registry.internal:5000/mirrored/busybox@sha256:" + "33" * 32,
         "indexDigest": None, "manifestDigest": "sha256:" + "44" * 32,
         "upstreamManifestDigest": "sha256:" + "33" * 32, "configDigest": "sha256:" + H,
         "platform": "linux/arm/v7", "layers": []},
    ],
}


def spdx_problems(doc: dict) -> list[str]:
    """What the official SPDX 2.3 JSON schema finds wrong, plus the spec's rules the schema
    does not express (SPDXID syntax, created's format, relationships naming known elements)."""
    validator = jsonschema.Draft7Validator(SCHEMA)
    problems = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
    ids = [doc.get("SPDXID")] + [p.get("SPDXID") for p in doc.get("packages", [])]
    for spdx_id in ids:
        if not re.fullmatch(r"SPDXRef-[A-Za-z0-9.\-]+", str(spdx_id)):
            problems.append(f"bad SPDXID {spdx_id!r}")
    if len(set(ids)) != len(ids):
        problems.append("SPDXIDs are not unique")
    for rel in doc.get("relationships", []):
        for key in ("spdxElementId", "relatedSpdxElement"):
            if rel[key] not in ids:
                problems.append(f"relationship names unknown {rel[key]!r}")
    created = doc.get("creationInfo", {}).get("created", "")
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created):
        problems.append(f"created {created!r} is not YYYY-MM-DDThh:mm:ssZ")
    if "#" in doc.get("documentNamespace", "#"):
        problems.append("documentNamespace missing or holds '#'")
    for p in doc.get("packages", []):
        for c in p.get("checksums", []):
            if c["algorithm"] == "SHA256" and not re.fullmatch(r"[0-9a-f]{64}", c["checksumValue"]):
                problems.append(f"{p['SPDXID']}: checksum {c['checksumValue']!r}")
    return problems


def test_document_is_valid_spdx_2_3():
    doc = sbom.document(MANIFEST, created="1970-01-01T00:00:00Z")
    assert spdx_problems(doc) == []
    # The checker itself sees breakage: a package without its SPDXID, an unknown relationship.
    broken = copy.deepcopy(doc)
    del broken["packages"][1]["SPDXID"]
    broken["relationships"][0]["relationshipType"] = "HOLDS"
    assert len(spdx_problems(broken)) >= 2


def test_packages_checksums_purls_and_relationships():
    doc = sbom.document(MANIFEST, created="1970-01-01T00:00:00Z")
    bundle, multus, busybox = doc["packages"]
    assert bundle["name"] == bundle["packageFileName"] == f"{STEM}.tar.zst"
    assert bundle["checksums"] == [{"algorithm": "SHA256", "checksumValue": "aa" * 32}]
    assert multus["name"] == "docker.io/rancher/hardened-multus-cni"
    assert multus["versionInfo"] == "v4.3.0-build20260722"
    assert multus["checksums"] == [{"algorithm": "SHA256", "checksumValue": "22" * 32}]
    assert multus["externalRefs"] == [{
        "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
        "referenceLocator": "pkg:oci/hardened-multus-cni@sha256%3A" + "22" * 32
                            + "?arch=amd64&repository_url=docker.io/rancher/hardened-multus-cni"
                            "&tag=v4.3.0-build20260722"}]
    # A digest-pinned image has no tag; the checksum is the digest in the bundle, and the
    # comment says what the registry's was.
    assert busybox["externalRefs"][0]["referenceLocator"] == (
        "pkg:oci/busybox@sha256%3A" + "44" * 32
        + "?arch=arm&repository_url=registry.internal:5000/mirrored/busybox")
    assert busybox["versionInfo"] == "sha256:" + "33" * 32
    assert "sha256:" + "33" * 32 in busybox["comment"]
    assert doc["relationships"] == [
        {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
         "relatedSpdxElement": bundle["SPDXID"]},
        {"spdxElementId": bundle["SPDXID"], "relationshipType": "CONTAINS",
         "relatedSpdxElement": multus["SPDXID"]},
        {"spdxElementId": bundle["SPDXID"], "relationshipType": "CONTAINS",
         "relatedSpdxElement": busybox["SPDXID"]},
    ]


def test_deterministic_created_and_namespace(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = sbom.dumps(sbom.document(MANIFEST))
    assert first == sbom.dumps(sbom.document(copy.deepcopy(MANIFEST)))
    doc = json.loads(first)
    assert doc["creationInfo"]["created"] == "1970-01-01T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1785000000")
    assert sbom.document(MANIFEST)["creationInfo"]["created"] == "2026-07-25T17:20:00Z"
    other = copy.deepcopy(MANIFEST)
    other["bundle"]["sha256"] = "bb" * 32
    assert sbom.document(other)["documentNamespace"] != doc["documentNamespace"]
    assert doc["documentNamespace"].startswith(f"https://spdx.org/spdxdocs/bundler/{STEM}")


@pytest.mark.parametrize("value", ["yesterday", "-1", "1.5", "9" * 13, "300000000000"])
def test_bad_source_date_epoch_is_one_line(value):
    with pytest.raises(InputError, match="SOURCE_DATE_EPOCH="):
        sbom.created_time({"SOURCE_DATE_EPOCH": value})


def test_file_name():
    assert sbom.file_name(f"{STEM}.tar.zst") == f"{STEM}.spdx.json"


def _index_manifest_digests(bundle: Path) -> set[str]:
    """The image manifests the bundle's OCI index.json names, read from the bundle itself."""
    index = json_member(plain_tar(bundle), "index.json")
    return {m["digest"] for m in index["manifests"]}


@pytest.mark.parametrize("mode", ["preserve", "uncompressed"])
def test_sbom_of_a_real_build_matches_the_bundle(fixture_registry, tmp_path, mode):
    run = bundler(*build_args(fixture_registry, tmp_path, REFS, "--layers", mode))
    assert run.code == 0, run.stderr
    dist = tmp_path / "dist"
    manifest = read_manifest(dist)
    doc = json.loads(sbom.dumps(sbom.document(manifest)))
    assert spdx_problems(doc) == []
    bundle_file = dist / f"{STEM}.tar.zst"
    assert doc["packages"][0]["checksums"][0]["checksumValue"] == hashlib.sha256(
        bundle_file.read_bytes()).hexdigest()
    images = doc["packages"][1:]
    assert len(images) == len(REFS)
    assert {"sha256:" + p["checksums"][0]["checksumValue"] for p in images} == \
        _index_manifest_digests(bundle_file)
