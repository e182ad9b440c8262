"""What verify says beyond OK: a file name K3s would not import, and which key a signature was
checked with (its fingerprint as openssl computes it)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from tests.cli_helpers import build_args, bundler
from tests.conftest import BUNDLE, REFS, STEM
from tests.test_signing import keypair

SUFFIX_WARNING = ("K3s will not import it under this name: a bundle is zstd, and K3s reads "
                  "zstd only from .tar.zst or .tzst files")


@pytest.mark.parametrize("name", ["renamed.tar.gz", "renamed.tar", "renamed.zst"])
def test_verify_warns_of_a_name_k3s_would_not_import(builds, tmp_path, name):
    renamed = tmp_path / name
    shutil.copy(builds["p1"] / BUNDLE, renamed)
    run = bundler("verify", str(renamed))
    assert run.code == 0, run.stderr
    assert f"bundler: warning: {name}: {SUFFIX_WARNING}\n" in run.stderr
    assert run.stdout.startswith(f"OK {renamed}: 3 images")
    report = json.loads(bundler("verify", "--json", str(renamed)).stdout)
    assert report["ok"] and report["warnings"] == [f"{name}: {SUFFIX_WARNING}"]
    # place refuses it, in the same words.
    run = bundler("place", str(renamed), "--images-dir", str(tmp_path / "images"))
    assert run.code == 2 and "a bundle is zstd, and K3s reads zstd only from" in run.stderr


@pytest.mark.parametrize("name", [BUNDLE, "x.TZST", "x.Tar.Zst"])
def test_an_importable_name_gets_no_warning(builds, tmp_path, name):
    renamed = tmp_path / name
    shutil.copy(builds["p1"] / BUNDLE, renamed)
    run = bundler("verify", str(renamed))
    assert run.code == 0 and "warning" not in run.stderr, run.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_verify_key_names_the_key_and_its_fingerprint(fixture_registry, tmp_path):
    key, pub = keypair(tmp_path)
    run = bundler(*build_args(fixture_registry, tmp_path, REFS, "--sign-key", str(key)))
    assert run.code == 0, run.stderr
    bundle, manifest = tmp_path / "dist" / BUNDLE, tmp_path / "dist" / f"{STEM}.manifest.json"
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(pub), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()
    run = bundler("verify", "--key", str(pub), str(bundle))
    assert run.code == 0, run.stderr
    ok, signed = run.stdout.splitlines()
    assert ok.startswith(f"OK {bundle}: ")
    assert signed == f"signed: {manifest} by {pub} ({fingerprint})"
    report = json.loads(bundler("verify", "--json", "--key", str(pub), str(bundle)).stdout)
    assert report["signedBy"] == {"key": str(pub), "fingerprint": fingerprint}
    # Without --key nothing claims a signature was checked.
    run = bundler("verify", str(bundle))
    assert run.code == 0 and "signed" not in run.stdout
    assert json.loads(bundler("verify", "--json", str(bundle)).stdout)["signedBy"] is None
