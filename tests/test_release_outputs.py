"""build --sign-key and --sbom end to end: the extra files, checked by tools other than ours, and
verify/place --key refusing what the key does not vouch for."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli_helpers import assert_one_line_error, build_args, bundler
from tests.conftest import BUNDLE, REFS, STEM
from tests.test_signing import keypair, openssl_verifies

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="openssl (Debian package openssl) is not installed")


@pytest.fixture(scope="module")
def signed(fixture_registry, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(output dir, private key, public key) of a build with --sign-key and --sbom."""
    tmp = tmp_path_factory.mktemp("signed")
    key, pub = keypair(tmp)
    run = bundler(*build_args(fixture_registry, tmp, REFS, "--sign-key", str(key), "--sbom"))
    assert run.code == 0, run.stderr
    return tmp / "dist", key, pub


def test_the_extra_files_and_their_checksums(signed):
    dist, _, pub = signed
    assert sorted(p.name for p in dist.iterdir()) == sorted([
        BUNDLE, f"{STEM}.txt", f"{STEM}.manifest.json", f"{STEM}.manifest.json.sig",
        f"{STEM}.spdx.json", "sha256sum-amd64.txt"])
    manifest = (dist / f"{STEM}.manifest.json").read_bytes()
    assert openssl_verifies(dist.parent, manifest, (dist / f"{STEM}.manifest.json.sig")
                            .read_bytes(), pub)
    sums = (dist / "sha256sum-amd64.txt").read_text()
    assert f"  {STEM}.spdx.json\n" in sums
    check = subprocess.run(["sha256sum", "-c", "sha256sum-amd64.txt"], cwd=dist,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    spdx = json.loads((dist / f"{STEM}.spdx.json").read_text())
    digests = {c["checksumValue"] for p in spdx["packages"] for c in p.get("checksums", [])}
    for image in json.loads(manifest)["images"]:
        assert image["manifestDigest"].split(":")[1] in digests


def test_same_inputs_same_extra_files(signed, fixture_registry, tmp_path):
    dist, key, _ = signed
    run = bundler(*build_args(fixture_registry, tmp_path, REFS, "--sign-key", str(key),
                              "--sbom"))
    assert run.code == 0, run.stderr
    for name in (f"{STEM}.spdx.json", f"{STEM}.manifest.json"):
        assert (tmp_path / "dist" / name).read_bytes() == (dist / name).read_bytes()


def test_verify_and_place_with_the_key(signed, tmp_path):
    dist, _, pub = signed
    run = bundler("verify", "--key", str(pub), str(dist / BUNDLE))
    assert run.code == 0, run.stdout + run.stderr
    run = bundler("place", "--key", str(pub), str(dist / BUNDLE), "--images-dir",
                  str(tmp_path / "images"))
    assert run.code == 0, run.stdout + run.stderr
    assert (tmp_path / "images" / BUNDLE).is_file()


def _copy(dist: Path, tmp: Path) -> Path:
    d = tmp / "copy"
    shutil.copytree(dist, d)
    return d


def test_unsigned_or_tampered_or_other_key_is_refused(signed, tmp_path):
    dist, _, pub = signed
    _, other_pub = keypair(tmp_path, "other")
    run = bundler("verify", "--key", str(other_pub), str(dist / BUNDLE))
    assert_one_line_error(run, "signature")
    assert run.code == 1

    d = _copy(dist, tmp_path)
    (d / f"{STEM}.manifest.json.sig").unlink()
    run = bundler("verify", "--key", str(pub), str(d / BUNDLE))
    assert_one_line_error(run, "unsigned")
    assert run.code == 1
    run = bundler("place", "--key", str(pub), str(d / BUNDLE), "--images-dir",
                  str(tmp_path / "images"))
    assert run.code == 1 and not (tmp_path / "images" / BUNDLE).exists()

    shutil.rmtree(d)
    d = _copy(dist, tmp_path)
    m = d / f"{STEM}.manifest.json"
    m.write_bytes(m.read_bytes().replace(b'"level": 16', b'"level": 15'))
    run = bundler("verify", "--key", str(pub), str(d / BUNDLE))
    assert_one_line_error(run, "signature")
    assert run.code == 1

    shutil.rmtree(d)
    d = _copy(dist, tmp_path)
    (d / f"{STEM}.manifest.json").unlink()
    run = bundler("verify", "--key", str(pub), str(d / BUNDLE))
    assert_one_line_error(run, "no checksum manifest")
    assert run.code == 1


def test_a_bad_signing_key_fails_before_any_download(fixture_registry, tmp_path):
    (tmp_path / "key.pem").write_text("not a key\n")
    run = bundler(*build_args(fixture_registry, tmp_path, REFS, "--sign-key",
                              str(tmp_path / "key.pem")))
    assert_one_line_error(run, "key.pem")
    assert run.code == 2
    assert not (tmp_path / "dist").exists()


def test_a_rebuild_without_key_or_sbom_leaves_no_earlier_signature_or_sbom(fixture_registry,
                                                                           tmp_path):
    # Beside a new bundle, an earlier build's SBOM (listed in sha256sum, so `sha256sum -c`
    # passed it) described other images, and its .sig another manifest.
    key, _ = keypair(tmp_path)
    other = tmp_path / "dist" / "sha256sum-amd64.txt"
    assert bundler(*build_args(fixture_registry, tmp_path, REFS, "--sign-key", str(key),
                               "--sbom")).code == 0
    foreign = "0" * 64 + "  some-other-release-file.tar.zst\n"
    other.write_text(other.read_text() + foreign)
    run = bundler(*build_args(fixture_registry, tmp_path, REFS[2:]))
    assert run.code == 0, run.stderr
    dist = tmp_path / "dist"
    assert sorted(p.name for p in dist.iterdir()) == sorted(
        [BUNDLE, f"{STEM}.txt", f"{STEM}.manifest.json", "sha256sum-amd64.txt"])
    sums = other.read_text()
    assert f"{STEM}.spdx.json" not in sums and foreign in sums
    subprocess.run(["sha256sum", "-c", "--ignore-missing", "sha256sum-amd64.txt"], cwd=dist,
                   check=True, capture_output=True)
