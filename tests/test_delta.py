"""bundler delta and patch end to end: two builds of the test images sharing some layers,
rebuilt byte for byte from the base and the delta; every damage refused with one line."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.cli_helpers import assert_one_line_error, build_args, bundler
from tests.conftest import BUNDLE, REFS, STEM
from tests.test_signing import keypair

# Both hold the big image and multilist's; OLD has busybox where NEW has ociindex's image
# (one layer shared with multilist's, two of its own).
OLD_REFS = [REFS[0], REFS[2], "rancher/big:v1"]
NEW_REFS = [REFS[0], REFS[1], "rancher/big:v1"]


def _build(fixture, tmp: Path, refs: list[str], mode: str, *extra: str) -> Path:
    run = bundler(*build_args(fixture, tmp, refs, "--layers", mode, *extra))
    assert run.code == 0, run.stderr
    return tmp / "dist"


@pytest.fixture(scope="module", params=["preserve", "uncompressed"])
def pair(request, fixture_registry, tmp_path_factory) -> tuple[Path, Path, Path, str]:
    """(OLD dir, NEW dir, public key, mode): NEW signed, with an SBOM."""
    mode = request.param
    old = _build(fixture_registry, tmp_path_factory.mktemp("old"), OLD_REFS, mode)
    tmp = tmp_path_factory.mktemp("new")
    key, pub = keypair(tmp)
    new = _build(fixture_registry, tmp, NEW_REFS, mode, "--sign-key", str(key), "--sbom")
    return old, new, pub, mode


def _delta(pair, tmp: Path) -> Path:
    old, new, _, _ = pair
    out = tmp / "carry" / "update.delta"
    out.parent.mkdir()
    run = bundler("delta", str(new / BUNDLE), "--base", str(old / BUNDLE), "-o", str(out))
    assert run.code == 0, run.stderr
    return out


def _files(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def test_patch_rebuilds_the_signed_bundle_and_its_files(pair, tmp_path):
    old, new, pub, mode = pair
    delta = _delta(pair, tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(old / BUNDLE, site / "old.tar.zst")
    run = bundler("patch", str(site / "old.tar.zst"), str(delta), "-o", str(site / "dist"))
    assert run.code == 0, run.stderr
    rebuilt = _files(site / "dist")
    assert rebuilt == {k: v for k, v in _files(new).items()}
    verified = bundler("verify", str(site / "dist" / BUNDLE), "--key", str(pub))
    assert verified.code == 0, verified.stderr
    # A delta carries what NEW adds, not the 24 MiB layer it shares with OLD.
    assert delta.stat().st_size < (new / BUNDLE).stat().st_size * 0.2


def test_a_delta_says_what_it_holds(pair, tmp_path):
    delta = _delta(pair, tmp_path)
    run = bundler("inspect", str(delta), "--json")
    assert run.code == 0, run.stderr
    import json

    info = json.loads(run.stdout)
    _, new, _, mode = pair
    assert info["new"]["file"] == BUNDLE
    assert info["new"]["size"] == (new / BUNDLE).stat().st_size
    assert sorted(info["files"]) == sorted(p.name for p in new.iterdir()
                                           if p.name.startswith(STEM) and p.name != BUNDLE)
    assert (info["recompressed"] is not None) == (mode == "uncompressed")
    assert info["copiedFromBase"] > 0 or mode == "uncompressed"


def _refused(run, tmp: Path, *fragments: str) -> None:
    assert_one_line_error(run, *fragments)
    assert not (tmp / "dist").exists() or not any(
        not p.name.startswith(".") for p in (tmp / "dist").iterdir())


def test_a_wrong_base_is_refused(pair, tmp_path):
    old, new, _, _ = pair
    delta = _delta(pair, tmp_path)
    (tmp_path / "dist").mkdir()
    run = bundler("patch", str(new / BUNDLE), str(delta), "-o", str(tmp_path / "dist"))
    _refused(run, tmp_path, "not the base this delta was made against")
    # The right size but other bytes: one byte of the base changed in its last frame.
    bad = tmp_path / "bad.tar.zst"
    data = bytearray((old / BUNDLE).read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    run = bundler("patch", str(bad), str(delta), "-o", str(tmp_path / "dist"))
    _refused(run, tmp_path, str(bad))
    assert run.code == 1


@pytest.mark.parametrize("where", ["recipe", "payload", "truncated", "magic"])
def test_a_damaged_delta_is_refused(pair, tmp_path, where):
    old, _, _, _ = pair
    delta = _delta(pair, tmp_path)
    data = bytearray(delta.read_bytes())
    if where == "recipe":
        data[40] ^= 1
    elif where == "payload":
        data[-100] ^= 1
    elif where == "truncated":
        del data[-1]
    else:
        data[0] ^= 1
    delta.write_bytes(bytes(data))
    (tmp_path / "dist").mkdir()
    run = bundler("patch", str(old / BUNDLE), str(delta), "-o", str(tmp_path / "dist"))
    if where == "magic":
        _refused(run, tmp_path, "not a bundler delta")
        assert run.code == 2
    else:
        _refused(run, tmp_path, str(delta), "damaged")
        assert run.code == 1
