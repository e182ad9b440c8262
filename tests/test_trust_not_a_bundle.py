"""A file that is not a zstd bundle is described by what it is not, never by its content: run
as root on a BUNDLE that is a symlink to a root-only file, verify, place, inspect and push must
not print that file's size or sha256."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from tests.cli_helpers import assert_one_line_error, bundler
from tests.conftest import BUNDLE

SECRET = b"root:$6$salt$not-a-real-hash:19000:0:99999:7:::\n" * 37
SKIPPABLE = struct.pack("<II", 0x184D2A50, 5) + b"hello"


def _planted(tmp_path: Path, content: bytes) -> Path:
    """BUNDLE, a symlink to a mode 0600 file holding `content`, with a sha256sum file
    beside that names BUNDLE (so a checksum comparison would have a hash to print)."""
    secret = tmp_path / "secret"
    secret.write_bytes(content)
    os.chmod(secret, 0o600)
    d = tmp_path / "d"
    d.mkdir()
    (d / BUNDLE).symlink_to(secret)
    (d / "sha256sum-amd64.txt").write_text(f"{'ab' * 32}  {BUNDLE}\n")
    return d / BUNDLE


def _says_nothing_of(text: str, content: bytes) -> None:
    assert hashlib.sha256(content).hexdigest() not in text
    assert f"{len(content)} bytes" not in text
    assert f"{len(content) / 1e6:.1f} MB" not in text


@pytest.mark.parametrize("content", [SECRET, gzip.compress(SECRET), SKIPPABLE + SECRET,
                                     SKIPPABLE[:6], b"\x28\xb5\x2f" + SECRET],
                         ids=["text", "gzip", "skippable-then-text", "cut-skippable",
                              "magic-prefix-then-text"])
def test_verify_says_only_that_it_is_not_a_bundle(tmp_path, content):
    bundle = _planted(tmp_path, content)
    run = bundler("verify", str(bundle))
    assert run.code == 1, run
    _says_nothing_of(run.stdout + run.stderr, content)
    problems = [line for line in run.stdout.splitlines() if not line.startswith("FAILED")]
    assert len(problems) == 1 and "zstd" in problems[0], run.stdout
    assert "1 problem\n" in run.stdout
    run = bundler("verify", "--json", str(bundle))
    report = json.loads(run.stdout)
    assert report["size"] is None and report["sha256"] is None
    assert report["problemCount"] == 1
    _says_nothing_of(run.stdout + run.stderr, content)


def test_place_inspect_and_push_say_nothing_of_it(tmp_path):
    bundle = _planted(tmp_path, SECRET)
    run = bundler("place", str(bundle), "--images-dir", str(tmp_path / "images"))
    assert_one_line_error(run, "not a zstd file")
    _says_nothing_of(run.stdout + run.stderr, SECRET)
    assert not (tmp_path / "images" / BUNDLE).exists()
    run = bundler("inspect", str(bundle))
    assert_one_line_error(run, "not a zstd bundle")
    _says_nothing_of(run.stdout + run.stderr, SECRET)
    run = bundler("push", str(bundle), "--to", "127.0.0.1:9")
    assert_one_line_error(run, "not a zstd bundle")
    _says_nothing_of(run.stdout + run.stderr, SECRET)


def test_a_skippable_frame_before_the_bundle_is_still_zstd(builds, tmp_path):
    """As the frame walk (and containerd) take a zstd stream: skippable frames, then a zstd
    frame. Such a file is a bundle to check, not a file to refuse unread."""
    d = tmp_path / "d"
    d.mkdir()
    (d / BUNDLE).write_bytes(SKIPPABLE + (builds["p1"] / BUNDLE).read_bytes())
    run = bundler("verify", "--json", str(d / BUNDLE))
    report = json.loads(run.stdout)
    assert report["ok"], report["problems"]
    assert report["sha256"] == hashlib.sha256((d / BUNDLE).read_bytes()).hexdigest()
