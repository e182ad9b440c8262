"""The checksum files read back: each disagreement between them and a bundle is one problem
that names the image or file, through verify and through checksums' own functions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bundler.bundleformat import checksums
from bundler.checks.verify import verify
from bundler.errors import InputError
from bundler.platform import Platform
from tests.conftest import BUNDLE, STEM

MANIFEST = f"{STEM}.manifest.json"
A, B, C = ("docker.io/rancher/a:1", "docker.io/rancher/b:2", "docker.io/library/c:3")
LAYERS = [{"digest": "sha256:" + "1" * 64, "diffID": "sha256:" + "2" * 64, "size": 10}]


def _copy(builds, tmp_path: Path) -> tuple[Path, dict]:
    d = tmp_path / "d"
    shutil.copytree(builds["p1"], d)
    return d, json.loads((d / MANIFEST).read_text())


def _verify_with(d: Path, doc: dict):
    (d / MANIFEST).write_text(json.dumps(doc))
    return verify(d / BUNDLE)


# -- through verify: the bundle's images against what the manifest records -----------------

def test_a_manifest_digest_that_differs_names_the_image(builds, tmp_path):
    d, doc = _copy(builds, tmp_path)
    item = doc["images"][1]
    in_bundle, item["manifestDigest"] = item["manifestDigest"], "sha256:" + "0" * 64
    report = _verify_with(d, doc)
    assert report.problems == [f"{item['reference']}: manifest digest {in_bundle}, checksum "
                               f"manifest says sha256:{'0' * 64}"]


def test_layers_and_config_that_differ_name_the_image(builds, tmp_path):
    d, doc = _copy(builds, tmp_path)
    item = doc["images"][0]
    item["layers"][-1]["size"] += 1
    item["configDigest"] = "sha256:" + "c" * 64
    report = _verify_with(d, doc)
    name = item["reference"]
    assert len(report.problems) == 2, report.problems
    assert report.problems[0].startswith(f"{name}: config digest sha256:")
    assert report.problems[0].endswith(f"checksum manifest says sha256:{'c' * 64}")
    assert report.problems[1] == f"{name}: layers differ from the checksum manifest"


def test_an_image_missing_from_either_side_is_named(builds, tmp_path):
    d, doc = _copy(builds, tmp_path)
    gone = doc["images"].pop(2)
    doc["images"].append({**doc["images"][0], "reference": C})
    report = _verify_with(d, doc)
    assert report.problems == [f"{C}: in the checksum manifest but not in the bundle",
                               f"{gone['reference']}: in the bundle but not in the checksum "
                               "manifest"]


def test_the_manifests_arch_is_the_platform_every_image_must_have(builds, tmp_path):
    d, doc = _copy(builds, tmp_path)
    report = _verify_with(d, {**doc, "arch": "arm64"})
    assert len(report.problems) == 3, report.problems
    assert all(p.endswith("config says linux/amd64, the bundle is linux/arm64")
               for p in report.problems), report.problems
    report = _verify_with(d, {**doc, "arch": "z80\n"})
    assert report.problems == ["checksum manifest: bad arch 'z80\\n'"]


def test_the_bundle_file_against_each_checksum_file(builds, tmp_path):
    d, doc = _copy(builds, tmp_path)
    sums = d / "sha256sum-amd64.txt"
    sums.write_text(f"{'0' * 64}  {BUNDLE}\n{'1' * 64}  other.tar.zst\n")
    (d / "sha256sum-arm64.txt").write_text(f"{'1' * 64}  other.tar.zst\n")  # not about it
    doc["bundle"]["size"] += 1
    report = _verify_with(d, doc)
    assert report.checked_against == [str(d / MANIFEST), str(sums)]
    size, sha = report.size, report.sha256
    assert report.problems == [
        f"{BUNDLE}: sha256 is {sha}, sha256sum-amd64.txt says {'0' * 64}",
        f"{BUNDLE}: {size} bytes with sha256 {sha}, the checksum manifest says {size + 1} "
        f"bytes with sha256 {sha}"]


# -- checksums' own functions ----------------------------------------------------------------

def _doc(*refs: str) -> dict:
    return {"schemaVersion": 1, "images": [
        {"reference": r, "manifestDigest": f"sha256:{n:064x}",
         "configDigest": f"sha256:{n + 100:064x}", "layers": LAYERS}
        for n, r in enumerate(refs)]}


def _layers_of(digest: str) -> tuple[str, list[dict]] | None:
    n = int(digest.removeprefix("sha256:"), 16)
    return f"sha256:{n + 100:064x}", [{"digest": x["digest"], "size": x["size"]}
                                      for x in LAYERS]


def test_images_that_agree_are_no_problem():
    in_bundle = {A: f"sha256:{0:064x}", B: f"sha256:{1:064x}"}
    assert checksums.check_images(_doc(A, B), in_bundle, _layers_of) == []


def test_each_image_entry_is_checked_once_and_by_its_full_name():
    doc = _doc(A, B)
    doc["images"] += [doc["images"][0], 7, {"reference": 5}, {"reference": "Bad Name"}]
    doc["images"][1]["reference"] = "rancher/b:2"  # the short form of B's name
    in_bundle = {A: f"sha256:{0:064x}", B: f"sha256:{1:064x}"}
    problems = checksums.check_images(doc, in_bundle, _layers_of)
    assert problems[:3] == [f"checksum manifest: {A} is listed twice",
                            "checksum manifest: an image entry is not an object",
                            "checksum manifest: an image entry has no reference"]
    assert problems[3].startswith("checksum manifest: ") and "Bad Name" in problems[3]
    assert len(problems) == 4, problems


def test_what_the_bundle_check_already_refused_is_not_said_again():
    # an index entry without a string digest, a manifest the bundle's checks refused
    in_bundle = {A: None, B: f"sha256:{1:064x}"}
    assert checksums.check_images(_doc(A, B), in_bundle, lambda digest: None) == []


def test_a_manifest_without_an_images_list():
    assert checksums.check_images({"images": {}}, {A: "x"}, _layers_of) == [
        "checksum manifest: no images list"]


def test_nothing_vouches_is_a_note_or_with_require_checksum_a_problem(tmp_path):
    bundle = tmp_path / BUNDLE
    assert checksums.check_file(bundle, 1, "ab", None, {}) == (
        [], [f"no checksum file beside {BUNDLE}: checked its content only"])
    assert checksums.check_file(bundle, 1, "ab", None, {}, require_checksum=True) == (
        [f"{BUNDLE}: no checksum file vouches for it (looked for {MANIFEST} and "
         "sha256sum-*.txt beside it)"], [])
    said = {str(tmp_path / "sha256sum-amd64.txt"): "ab"}
    assert checksums.check_file(bundle, 1, "ab", None, said, require_checksum=True) == ([], [])


def test_the_bundle_record_of_the_wrong_shape_is_shown_safely(tmp_path):
    problems, _ = checksums.check_file(tmp_path / BUNDLE, 1, "ab",
                                       {"bundle": {"size": "1\x1b[2J", "sha256": None}}, {})
    assert problems == [f"{BUNDLE}: 1 bytes with sha256 ab, the checksum manifest says "
                        "'1\\x1b[2J' bytes with sha256 None"]


def test_platform_of():
    assert checksums.platform_of(None) is None
    assert checksums.platform_of({"schemaVersion": 1}) is None
    assert checksums.platform_of({"arch": "amd64"}) == Platform("linux", "amd64")
    for bad, shown in ((["amd64"], "['amd64']"), ("pdp11", "pdp11")):
        with pytest.raises(InputError, match=r"^checksum manifest: bad arch ") as e:
            checksums.platform_of({"arch": bad})
        assert str(e.value) == f"checksum manifest: bad arch {shown}"


def test_read_manifest_beside_given_or_none(tmp_path):
    bundle = tmp_path / BUNDLE
    assert checksums.read_manifest(bundle) is None
    (tmp_path / MANIFEST).write_text('{"schemaVersion": 1, "images": []}')
    assert checksums.read_manifest(bundle) == ({"schemaVersion": 1, "images": []},
                                               tmp_path / MANIFEST)
    with pytest.raises(InputError, match="no such checksum manifest"):
        checksums.read_manifest(bundle, tmp_path / "absent.json")
    (tmp_path / MANIFEST).write_text('{"schemaVersion": 2}')
    with pytest.raises(InputError, match=r"not a bundler checksum manifest \(schemaVersion 1\)"):
        checksums.read_manifest(bundle)
    (tmp_path / MANIFEST).write_bytes(b'\xef\xbb\xbf{"schemaVersion": 1}')
    with pytest.raises(InputError, match="not JSON"):
        checksums.read_manifest(bundle)


def test_sums_beside_lists_the_files_that_name_the_bundle(tmp_path):
    bundle = tmp_path / BUNDLE
    (tmp_path / "sha256sum-amd64.txt").write_text(f"{'a' * 64}  {BUNDLE}\n")
    (tmp_path / "sha256sum-arm64.txt").write_text(f"{'b' * 64} *{BUNDLE}\n")
    (tmp_path / "sha256sum-s390x.txt").write_text(f"{'c' * 64}  other.tar.zst\n")
    (tmp_path / "SHA256SUMS").write_text(f"{'d' * 64}  {BUNDLE}\n")
    assert checksums.sums_beside(bundle) == {str(tmp_path / "sha256sum-amd64.txt"): "a" * 64,
                                             str(tmp_path / "sha256sum-arm64.txt"): "b" * 64}


def test_stem():
    assert checksums.stem(Path("/x/k3s-airgap-images-amd64.tar.zst")) == \
        "k3s-airgap-images-amd64"
    assert checksums.stem(Path("/x/bundle.tzst")) == "bundle"


# -- the date a manifest records ($SOURCE_DATE_EPOCH) and --not-before's DATE ----------------

def test_source_date_epoch_as_the_spec_writes_it():
    read = checksums.source_date_epoch
    assert read({}) is None and read({"SOURCE_DATE_EPOCH": ""}) is None  # unset: undated
    assert read({"SOURCE_DATE_EPOCH": "0"}) == 0
    assert read({"SOURCE_DATE_EPOCH": "1700000000"}) == 1700000000
    assert read({"SOURCE_DATE_EPOCH": str(checksums.LAST_EPOCH)}) == 253402300799
    for bad in ("-1", "+1", "1.0", "1e9", " 1", "1 ", "1\n", "0x10", "١٢", "253402300800",
                "9" * 13, " "):
        with pytest.raises(InputError, match=r"^SOURCE_DATE_EPOCH=.*date \+%s"):
            read({"SOURCE_DATE_EPOCH": bad})


def test_the_manifest_records_the_date_only_when_given():
    def doc(epoch):
        return checksums.manifest_document(
            [], [], arch="amd64", layers="preserve", level=16, window_log=25,
            bundle_file=BUNDLE, bundle_size=1, bundle_sha256="a" * 64, source_date_epoch=epoch)

    assert "sourceDateEpoch" not in doc(None)
    assert doc(0)["sourceDateEpoch"] == 0
    assert checksums.recorded_epoch(doc(1700000000)) == 1700000000
    assert checksums.recorded_epoch(doc(None)) is None
    assert doc(5)["schemaVersion"] == 1  # an optional field: older readers keep reading it


@pytest.mark.parametrize("bad", ["1700000000", 1.7e9, True, -1, 253402300800, None, [1]])
def test_a_recorded_date_that_is_not_one(bad):
    with pytest.raises(ValueError, match="^checksum manifest: bad sourceDateEpoch"):
        checksums.recorded_epoch({"sourceDateEpoch": bad})


def test_a_bad_recorded_date_is_a_problem_and_refused_by_not_before(builds, tmp_path):
    d, doc = _copy(builds, tmp_path)
    doc["sourceDateEpoch"] = "2023-11-14"
    report = _verify_with(d, doc)
    assert report.problems == ['checksum manifest: bad sourceDateEpoch 2023-11-14: want whole '
                               'seconds since 1970-01-01 UTC']
    with pytest.raises(checksums.TooOld, match="bad sourceDateEpoch"):
        verify(d / BUNDLE, not_before=checksums.parse_time("2000-01-01"))
    doc["sourceDateEpoch"] = 1700000000
    assert _verify_with(d, doc).ok


def test_parse_time():
    def utc(text):
        return checksums.shown_time(checksums.parse_time(text))

    assert utc("2026-01-31") == "2026-01-31T00:00:00Z"
    assert utc("2026-01-31T12:30") == "2026-01-31T12:30:00Z"
    assert utc("2026-01-31t12:30:15z") == "2026-01-31T12:30:15Z"
    assert utc("2026-01-31 12:30:15,25") == "2026-01-31T12:30:15.250000Z"
    assert utc("2026-01-31T12:30:15+01:30") == "2026-01-31T11:00:15Z"
    assert utc("2026-01-31T00:30:15-0100") == "2026-01-31T01:30:15Z"
    assert utc("2026-01-31T00:30:15+02") == "2026-01-30T22:30:15Z"
    assert checksums.shown_time(1700000000) == "2023-11-14T22:13:20Z"
    for bad in ("", "2026", "2026-01", "2026-1-31", "2026-02-30", "2026-01-31T24:00",
                "2026-01-31T12", "2026-01-31T12:60", "2026-01-31Z", "2026-01-31T12:00+25:00",
                "2026-01-31T12:00:00.1234567", "٢٠٢٦-01-31", "2026-01-31T12:00 UTC",
                "yesterday", "1700000000"):
        with pytest.raises(InputError, match="want an ISO 8601 date"):
            checksums.parse_time(bad)


def test_the_name_signed_for(tmp_path):
    doc = {"bundle": {"file": "other-amd64.tar.zst"}}
    checksums.check_signed_name(doc, tmp_path / "other-amd64.tar.zst")
    with pytest.raises(checksums.RenamedBundle) as e:
        checksums.check_signed_name(doc, tmp_path / BUNDLE)
    assert str(e.value) == (f"{tmp_path / BUNDLE}: the signed checksum manifest is for a file "
                            f"named other-amd64.tar.zst, not {BUNDLE}")
    assert e.value.exit_code == 1
    for odd in ({}, {"bundle": None}, {"bundle": {"file": None}}):
        with pytest.raises(checksums.RenamedBundle, match="named None"):
            checksums.check_signed_name(odd, tmp_path / BUNDLE)
