"""bundler inspect on preserve and compact bundles, text and JSON."""

from __future__ import annotations

import json
import shutil

from bundler.sources.bundle import frame_index
from tests.cli_helpers import assert_one_line_error, bundler, read_manifest
from tests.conftest import STEM


def _expected(out_dir) -> list[dict]:
    return read_manifest(out_dir)["images"]


def _check_json(info: dict, out_dir, sizes_from: str) -> None:
    assert info["sizesFrom"] == sizes_from
    want = _expected(out_dir)
    assert [i["reference"] for i in info["images"]] == [i["reference"] for i in want]
    for have, item in zip(info["images"], want, strict=True):
        assert have["platform"] == item["platform"] == "linux/amd64"
        assert have["manifestDigest"] == item["manifestDigest"]
        assert have["configDigest"] == item["configDigest"]
        assert have["layerCount"] == len(item["layers"])
        assert have["layers"] == [{"digest": x["digest"], "size": x["size"]}
                                  for x in item["layers"]]
        assert have["size"] == sum(x["size"] for x in item["layers"])


def test_preserve_json(builds):
    run = bundler("inspect", str(builds["p1"] / f"{STEM}.tar.zst"), "--json")
    assert run.code == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["framing"] == "per-blob"
    _check_json(info, builds["p1"], "bundle")


def test_compact_json_sizes_from_the_checksum_manifest(builds):
    run = bundler("inspect", str(builds["u1"] / f"{STEM}.tar.zst"), "--json")
    assert run.code == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["framing"] == "single"
    _check_json(info, builds["u1"], "checksum manifest")


def test_compact_alone_has_digests_but_no_sizes(tmp_path, builds):
    lone = tmp_path / f"{STEM}.tar.zst"
    shutil.copy(builds["u1"] / f"{STEM}.tar.zst", lone)
    info = json.loads(bundler("inspect", str(lone), "--json").stdout)
    assert info["sizesFrom"] is None
    want = _expected(builds["u1"])
    for have, item in zip(info["images"], want, strict=True):
        assert have["manifestDigest"] == item["manifestDigest"]
        assert [x["digest"] for x in have["layers"]] == [x["digest"] for x in item["layers"]]
        assert have["size"] is None
    text = bundler("inspect", str(lone)).stdout
    assert "layer sizes are not in the metadata" in text


def test_text(builds):
    run = bundler("inspect", str(builds["p1"] / f"{STEM}.tar.zst"))
    assert run.code == 0, run.stderr
    for item in _expected(builds["p1"]):
        assert item["reference"] in run.stdout
        assert f"manifest   {item['manifestDigest']}" in run.stdout
        assert f"config     {item['configDigest']}" in run.stdout
        assert f"layers     {len(item['layers'])}" in run.stdout
    assert "3 images" in run.stdout.splitlines()[0]


def test_preserve_inspect_reads_no_layer(tmp_path, builds):
    """A byte flipped inside every layer frame: inspect does not decompress them and still
    answers (verify would fail the bundle)."""
    src = builds["p1"] / f"{STEM}.tar.zst"
    frames = frame_index(src)
    layers = {x["digest"] for i in _expected(builds["p1"]) for x in i["layers"]}
    data = bytearray(src.read_bytes())
    for digest in layers:
        data[frames[digest][0] + 300] ^= 0xFF
    bad = tmp_path / f"{STEM}.tar.zst"
    bad.write_bytes(bytes(data))
    run = bundler("inspect", str(bad), "--json")
    assert run.code == 0, run.stderr
    _check_json(json.loads(run.stdout), builds["p1"], "bundle")
    assert bundler("verify", str(bad)).code == 1


def test_not_a_bundle(tmp_path):
    bad = tmp_path / "junk.tar.zst"
    bad.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 100)
    run = bundler("inspect", str(bad))
    assert_one_line_error(run, str(bad))
    assert run.code == 2
