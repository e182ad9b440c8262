"""bundler inspect on preserve and compact bundles, text and JSON, from the bundle alone."""

from __future__ import annotations

import json
import shutil

import pytest
import zstandard

from bundler.commands import inspect as inspection
from bundler.errors import InputError
from bundler.sources.bundle import frame_index
from tests import tarcraft
from tests.bundlefiles import plain_tar, write_zst
from tests.cli_helpers import assert_one_line_error, bundler, read_manifest
from tests.conftest import STEM


def _expected(out_dir) -> list[dict]:
    return read_manifest(out_dir)["images"]


def _check_json(info: dict, out_dir, sizes_from: str) -> None:
    assert info["sizesFrom"] == sizes_from
    assert info["sizesMissing"] is None
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


def _check_no_sizes(info: dict, out_dir) -> None:
    assert info["framing"] == "single"
    assert info["sizesFrom"] is None and info["sizesMissing"] == "needs decompression"
    assert info["decompressedWhole"] is False
    want = _expected(out_dir)
    for have, item in zip(info["images"], want, strict=True):
        assert have["manifestDigest"] == item["manifestDigest"]
        assert have["configDigest"] == item["configDigest"]
        assert [x["digest"] for x in have["layers"]] == [x["digest"] for x in item["layers"]]
        assert all(x["size"] is None for x in have["layers"])
        assert have["size"] is None


def _alone(tmp_path, out_dir):
    """The bundle copied into a directory of its own: no checksum manifest beside it."""
    lone = tmp_path / "alone" / f"{STEM}.tar.zst"
    lone.parent.mkdir()
    shutil.copy(out_dir / f"{STEM}.tar.zst", lone)
    return lone


def test_preserve_json(builds):
    run = bundler("inspect", str(builds["p1"] / f"{STEM}.tar.zst"), "--json")
    assert run.code == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["framing"] == "per-blob"
    assert info["decompressedWhole"] is False
    _check_json(info, builds["p1"], "bundle")


def test_preserve_alone_is_the_same(tmp_path, builds):
    beside = inspection.inspect(builds["p1"] / f"{STEM}.tar.zst")
    alone = inspection.inspect(_alone(tmp_path, builds["p1"]))
    assert {**alone, "file": ""} == {**beside, "file": ""}


def test_compact_json_says_sizes_need_decompression(tmp_path, builds):
    """With or without the checksum manifest beside it: inspect describes the bundle, and a
    compact bundle's front holds no sizes."""
    beside = bundler("inspect", str(builds["u1"] / f"{STEM}.tar.zst"), "--json")
    alone = bundler("inspect", str(_alone(tmp_path, builds["u1"])), "--json")
    for run in (beside, alone):
        assert run.code == 0, run.stderr
        _check_no_sizes(json.loads(run.stdout), builds["u1"])
    assert {**json.loads(alone.stdout), "file": ""} == {**json.loads(beside.stdout), "file": ""}


@pytest.mark.parametrize("where", ["beside", "alone"])
def test_compact_sizes_when_asked(tmp_path, builds, where):
    path = builds["u1"] / f"{STEM}.tar.zst" if where == "beside" else _alone(tmp_path,
                                                                             builds["u1"])
    info = inspection.inspect(path, sizes=True)
    assert info["framing"] == "single" and info["decompressedWhole"] is True
    _check_json(info, builds["u1"], "bundle")
    assert "after decompressing the whole bundle" in inspection.render_text(info)


def test_sizes_flag_reads_a_compact_bundles_sizes(builds):
    run = bundler("inspect", str(builds["u1"] / f"{STEM}.tar.zst"), "--sizes", "--json")
    assert run.code == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["decompressedWhole"] is True
    _check_json(info, builds["u1"], "bundle")


def test_sizes_asked_of_a_preserve_bundle_reads_no_more(builds):
    info = inspection.inspect(builds["p1"] / f"{STEM}.tar.zst", sizes=True)
    assert info["decompressedWhole"] is False
    _check_json(info, builds["p1"], "bundle")


def test_text(builds):
    run = bundler("inspect", str(builds["p1"] / f"{STEM}.tar.zst"))
    assert run.code == 0, run.stderr
    for item in _expected(builds["p1"]):
        assert item["reference"] in run.stdout
        assert f"manifest   {item['manifestDigest']}" in run.stdout
        assert f"config     {item['configDigest']}" in run.stdout
        assert f"layers     {len(item['layers'])}, " in run.stdout
        for layer in item["layers"]:
            assert layer["digest"] in run.stdout
    assert "3 images" in run.stdout.splitlines()[0]
    assert "decompress" not in run.stdout


def test_compact_text(builds):
    run = bundler("inspect", str(builds["u1"] / f"{STEM}.tar.zst"))
    assert run.code == 0, run.stderr
    for item in _expected(builds["u1"]):
        assert f"manifest   {item['manifestDigest']}" in run.stdout
        assert f"layers     {len(item['layers'])}\n" in run.stdout
    assert "layer sizes not shown" in run.stdout
    assert "--sizes" in run.stdout


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


@pytest.mark.parametrize("name", ["p1", "u1"])
@pytest.mark.parametrize("keep", [0.5, 0.999, 200])
def test_truncated_bundle_is_one_line(tmp_path, builds, name, keep):
    """Cut inside the metadata frame (200 bytes), in the middle, or just before the end:
    the frame walk or the tar reader says so, naming the file, whatever the layout."""
    data = (builds[name] / f"{STEM}.tar.zst").read_bytes()
    cut = tmp_path / f"{STEM}.tar.zst"
    cut.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    for args in ((), ("--json",)):
        run = bundler("inspect", str(cut), *args)
        assert_one_line_error(run, str(cut))
        assert run.code == 2
        assert run.stdout == ""


def test_compact_with_a_damaged_manifest(tmp_path, builds):
    """Without --sizes the manifests are not read (the front still describes the bundle);
    with it, a manifest that does not hash to its digest is one line naming it."""
    item = _expected(builds["u1"])[0]
    tar = bytearray(plain_tar(builds["u1"] / f"{STEM}.tar.zst"))
    name = f"blobs/sha256/{item['manifestDigest'].split(':')[1]}".encode()
    at = next(i for i in range(0, len(tar), 512) if tar[i:i + len(name)] == name)
    tar[at + 512 + 20] ^= 0x01
    bad = tmp_path / f"{STEM}.tar.zst"
    write_zst(bytes(tar), bad, level=1)
    _check_no_sizes(inspection.inspect(bad), builds["u1"])
    with pytest.raises(InputError) as e:
        inspection.inspect(bad, sizes=True)
    assert str(bad) in str(e.value) and item["manifestDigest"].split(":")[1] in str(e.value)
    assert "\n" not in str(e.value)


def test_front_that_never_ends_is_refused(tmp_path):
    """A zstd bomb of directory entries where the metadata should be: inspect stops after
    what four metadata documents could take, instead of walking gigabytes."""
    bomb = tmp_path / f"{STEM}.tar.zst"
    entry = tarcraft.member("blobs", typeflag=b"5")
    with open(bomb, "wb") as f, zstandard.ZstdCompressor(level=1).stream_writer(f) as w:
        for _ in range(64):  # 64 x 1 MiB of directory headers, about 20 KB compressed
            w.write(entry * (1 << 11))
    assert bomb.stat().st_size < 1 << 20
    run = bundler("inspect", str(bomb))
    assert_one_line_error(run, str(bomb), "decompresses to more than")
    assert run.code == 2


def test_index_naming_a_manifest_that_is_not_there(tmp_path, builds):
    """index.json names a manifest digest the bundle does not hold: the front alone cannot
    tell (inspect says what it read); asked for sizes, inspect says which one is missing."""
    tar = bytearray(plain_tar(builds["p1"] / f"{STEM}.tar.zst"))
    digest = _expected(builds["p1"])[0]["manifestDigest"].split(":")[1].encode()
    head = bytes(tar[:64 << 10])  # the metadata members; index.json is the first to name it
    tar[: len(head)] = head.replace(digest, b"0" * 64, 1)
    bad = tmp_path / f"{STEM}.tar.zst"
    write_zst(bytes(tar), bad, level=1)  # same length: the tar stays well-formed
    info = inspection.inspect(bad)
    assert info["images"][0]["manifestDigest"] == "sha256:" + "0" * 64
    assert info["sizesMissing"] == "needs decompression"
    with pytest.raises(InputError) as e:
        inspection.inspect(bad, sizes=True)
    assert str(bad) in str(e.value) and "0" * 64 + " is missing" in str(e.value)


@pytest.mark.parametrize("field", ["layer", "config"])
def test_manifest_json_disagreeing_with_the_manifest(tmp_path, builds, field):
    """manifest.json (at the front) names another layer or config than the manifest: the
    sizes would be shown against the wrong digests, so inspect refuses, in one line."""
    item = _expected(builds["p1"])[0]
    wanted = item["layers"][0]["digest"] if field == "layer" else item["configDigest"]
    tar = bytearray(plain_tar(builds["p1"] / f"{STEM}.tar.zst"))
    head = bytes(tar[:64 << 10])
    hex_digest = wanted.split(":")[1].encode()
    # The first mention at the front is manifest.json's (index.json names only manifests).
    assert head.index(hex_digest) > head.index(b"manifest.json")
    tar[: len(head)] = head.replace(hex_digest, b"0" * 64, 1)
    bad = tmp_path / f"{STEM}.tar.zst"
    write_zst(bytes(tar), bad, level=1)
    with pytest.raises(InputError) as e:
        inspection.inspect(bad, sizes=True)
    assert str(bad) in str(e.value) and item["reference"] in str(e.value)
    assert ("different layers" if field == "layer" else "names config") in str(e.value)


def _front_edited(builds, tmp_path, old: bytes, new: bytes, name: str = "p1"):
    """The bundle recompressed as one frame with `old` replaced by `new` (same length) once
    in its metadata."""
    assert len(old) == len(new)
    tar = bytearray(plain_tar(builds[name] / f"{STEM}.tar.zst"))
    head = bytes(tar[:64 << 10])
    assert old in head
    tar[: len(head)] = head.replace(old, new, 1)
    bad = tmp_path / f"{STEM}.tar.zst"
    write_zst(bytes(tar), bad, level=1)
    return bad


def test_a_platform_with_a_terminal_escape_is_refused_in_one_line(tmp_path, builds):
    """index.json declaring architecture ESC[2J (the attacker's screen-clearing platform):
    refused naming the file and the image, nothing of it printed raw."""
    bad = _front_edited(builds, tmp_path, b'"architecture":"amd64","os":"linux"',
                        b'"architecture":"\\u001b[2J","os":"l"')
    for args in ((), ("--json",)):
        run = bundler("inspect", str(bad), *args)
        assert_one_line_error(run, str(bad), "manifests[0]", "architecture",
                              "not a platform name")
        assert run.code == 2 and run.stdout == ""
        assert "\x1b" not in run.stderr


def test_text_escapes_what_is_not_printable():
    info = {"file": "b.tar.zst", "size": 1, "sizesMissing": None, "decompressedWhole": False,
            "images": [{"reference": "x\x1b[2J\nOK fake", "platform": "linux/\x1b[8m",
                        "manifestDigest": "sha256:\r", "configDigest": "sha256:\x07",
                        "layerCount": 1, "layers": [{"digest": "\x1b]0;t\x07", "size": None}],
                        "size": None}]}
    text = inspection.render_text(info)
    assert all(line.isprintable() for line in text.splitlines()), text
    assert "OK fake" not in text.splitlines()


def _metadata_frame_edited(builds, tmp_path, old: bytes, new: bytes):
    """The preserve bundle with `old` replaced by `new` (same length) in its metadata frame
    only: every blob keeps its own frame."""
    from bundler.bundleformat import compress

    assert len(old) == len(new)
    src = builds["p1"] / f"{STEM}.tar.zst"
    data = src.read_bytes()
    with open(src, "rb") as f:
        second = [fr.offset for fr in compress.frames(compress.Seeking(f))][1]
    front = zstandard.ZstdDecompressor().decompressobj().decompress(data[:second])
    assert old in front
    bad = tmp_path / f"{STEM}.tar.zst"
    bad.write_bytes(zstandard.ZstdCompressor(level=3).compress(front.replace(old, new, 1))
                    + data[second:])
    return bad


def test_a_name_is_shown_as_written_and_a_short_one_is_marked(tmp_path, builds):
    """index.json naming library/busybox:1.36.1 (containerd records it so; verify refuses it):
    inspect used to print the normalized docker.io/... name, a cleaned-up view."""
    full = b'"io.containerd.image.name":"docker.io/library/busybox:1.36.1"'
    short = b'"io.containerd.image.name":          "library/busybox:1.36.1"'
    bad = _metadata_frame_edited(builds, tmp_path, full, short)
    info = inspection.inspect(bad)
    busybox = info["images"][2]
    assert busybox["reference"] == "library/busybox:1.36.1"
    assert busybox["fullName"] == "docker.io/library/busybox:1.36.1"
    assert all(i["fullName"] is None for i in info["images"][:2])
    text = inspection.render_text(info)
    assert "\nlibrary/busybox:1.36.1  (not a full name: docker.io/library/busybox:1.36.1; " \
        "verify refuses it)\n" in text
    assert bundler("verify", str(bad)).code == 1


def test_a_declared_platform_the_config_contradicts_is_marked(tmp_path, builds):
    declared = b'"platform":{"architecture":"amd64","os":"linux"}'
    bad = _metadata_frame_edited(builds, tmp_path, declared,
                                 b'"platform":{"architecture":"arm64","os":"linux"}')
    info = inspection.inspect(bad)
    first = info["images"][0]
    assert (first["platform"], first["configPlatform"]) == ("linux/arm64", "linux/amd64")
    assert all(i["configPlatform"] == i["platform"] == "linux/amd64"
               for i in info["images"][1:])
    text = inspection.render_text(info)
    assert "  platform   linux/arm64  (as index.json declares it; its config says " \
        "linux/amd64)\n" in text
    assert text.count("config says") == 1
    assert bundler("verify", str(bad)).code == 1


@pytest.mark.parametrize("name", ["p1", "u1"])
def test_text_ends_saying_inspect_does_not_verify(builds, name):
    run = bundler("inspect", str(builds[name] / f"{STEM}.tar.zst"))
    assert run.code == 0, run.stderr
    assert run.stdout.splitlines()[-1] == ("inspect describes what the bundle says; it does "
                                           "not verify it (`bundler verify` does)")
    assert "not a full name" not in run.stdout and "config says" not in run.stdout
    info = inspection.inspect(builds[name] / f"{STEM}.tar.zst")
    assert info["verified"] is False
