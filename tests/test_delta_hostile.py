"""bundler patch against a hostile delta: the recipe is untrusted JSON that names files, ranges
and members. Each delta here is written by the real format writer with a recipe an attacker
chose; patch must refuse it with one line and leave nothing under a final name (and every
file that was there before as it was)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from bundler.bundleformat import delta as fmt
from tests.cli_helpers import assert_one_line_error, bundler

NEW = "k3s-airgap-images-amd64.tar.zst"
TAIL = b"the bytes NEW adds"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _delta(tmp: Path, *, base: bytes = b"B" * 4096, new_name: str = NEW,
           pieces: list | None = None, files: dict[str, bytes] | None = None,
           sums: dict | None = None, new: bytes | None = None, tail: bytes = TAIL,
           **extra: object) -> Path:
    """old.tar.zst (`base`) and x.delta in `tmp`: by default the delta rebuilds NEW as half
    of the base and TAIL, and carries `files` as side files."""
    (tmp / "old.tar.zst").write_bytes(base)
    payload = bytearray(tail)
    if new is None:
        new = base[: len(base) // 2] + tail
    if pieces is None:
        pieces = [{"copy": {"offset": 0, "size": len(base) // 2}},
                  {"data": {"offset": 0, "size": len(tail), "sha256": _sha(tail)}}]
    side = []
    for name, data in (files or {}).items():
        side.append({"file": name, "offset": len(payload), "size": len(data),
                     "sha256": _sha(data)})
        payload += data
    doc = {"format": fmt.FORMAT,
           "base": {"file": "old.tar.zst", "size": len(base), "sha256": _sha(base)},
           "new": {"file": new_name, "size": len(new), "sha256": _sha(new)},
           "layers": "preserve", "zstd": "1.5.7", "pieces": pieces, "files": side,
           "sums": sums or {}, "payloadSize": len(payload), **extra}
    with open(tmp / "x.delta", "wb") as out:
        fmt.write(out, doc, iter([bytes(payload)]))
    return tmp / "x.delta"


def _patch(tmp: Path, timeout: float = 60):
    return bundler("patch", str(tmp / "old.tar.zst"), str(tmp / "x.delta"), "-o",
                   str(tmp / "out"), timeout=timeout)


def _untouched(tmp: Path, before: dict[str, bytes]) -> None:
    """Only what was in out/ before is there, byte for byte (no final name, no temporary)."""
    out = tmp / "out"
    now = {p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else {}
    assert now == before


def _refused_as_damaged(tmp: Path, **delta: object):
    """A delta made with `delta` into a seeded output directory: patch names it damaged in one
    line and leaves the directory as it was. The run, for more checks."""
    before = _seed(tmp)
    _delta(tmp, **delta)
    run = _patch(tmp)
    assert_one_line_error(run, "x.delta", "damaged")
    _untouched(tmp, before)
    return run


def _seed(tmp: Path) -> dict[str, bytes]:
    """An output directory that already holds another bundle and its sha256sum line."""
    out = tmp / "out"
    out.mkdir()
    other = b"another bundle"
    files = {"other.tar.zst": other,
             "sha256sum-amd64.txt": f"{_sha(other)}  other.tar.zst\n".encode()}
    for name, data in files.items():
        (out / name).write_bytes(data)
    return files


def test_a_crafted_delta_that_names_only_its_own_files_is_patched(tmp_path):
    """The control: the crafting here makes deltas patch takes."""
    new = b"B" * 2048 + TAIL
    manifest = json.dumps({"bundle": {"name": NEW, "size": len(new), "sha256": _sha(new)}})
    _delta(tmp_path, files={NEW.removesuffix(".tar.zst") + ".manifest.json": manifest.encode()})
    run = _patch(tmp_path)
    assert run.code == 0, run.stderr
    assert (tmp_path / "out" / NEW).read_bytes() == b"B" * 2048 + TAIL


STEM = NEW.removesuffix(".tar.zst")


@pytest.mark.parametrize("files", [
    {NEW: b"not the bundle"},  # a side file with the bundle's name, renamed after it
    {"sha256sum-amd64.txt": b"0" * 64 + b"  other.tar.zst\n"},
    {"other.tar.zst": b"a file that replaces another bundle"},
    {"evil.tar": b"a file K3s would import from agent/images"},
    {"registries.yaml": b"mirrors: {}"},
    {".x.1-aa.partial": b"a name a later run removes as its own temporary"},
    {STEM + ".txt": b"one", STEM + ".txt ": b"two"},
], ids=["bundle", "sums", "other-bundle", "importable", "config", "temp", "near-duplicate"])
def test_a_side_file_not_named_after_the_bundle_is_refused(tmp_path, files):
    _refused_as_damaged(tmp_path, files=files)


def test_a_side_file_carried_twice_is_refused(tmp_path):
    before = _seed(tmp_path)
    delta = _delta(tmp_path, files={STEM + ".txt": b"one"})
    # The same entry twice: the second would silently replace the first.
    data = delta.read_bytes()
    line = data[len(fmt.MAGIC):].split(b"\n", 1)[0]
    doc = json.loads(line)
    doc["files"].append(doc["files"][0])
    with open(delta, "wb") as out:
        fmt.write(out, doc, iter([TAIL + b"one"]))
    run = _patch(tmp_path)
    assert_one_line_error(run, "x.delta", "damaged")
    _untouched(tmp_path, before)


@pytest.mark.parametrize("new_name", [
    "sha256sum-amd64.txt", "other.tar.zst.partial", ".x.1-aa.partial", "n\u0435w.tar.zst",
    "a\u202eb.tar.zst", "evil.tar"])
def test_a_bundle_name_that_is_no_bundle_name_is_refused(tmp_path, new_name):
    run = _refused_as_damaged(tmp_path, new_name=new_name)
    assert "\u0435" not in run.stderr and "\u202e" not in run.stderr


@pytest.mark.parametrize("sums", [
    {NEW: {NEW: "0" * 64}},  # a sha256sum file named as the bundle replaces it
    {"registries.yaml": {NEW: "0" * 64}},
    {"sha256sum-amd64.txt": {"other.tar.zst": "1" * 64}},  # vouches for a file not rebuilt
    {"sha256sum-amd64.txt": {NEW: "2" * 64}},  # vouches for other bytes than those rebuilt
], ids=["named-as-bundle", "not-a-sums-file", "other-file", "other-bytes"])
def test_sha256sum_lines_vouch_only_for_what_patch_rebuilds(tmp_path, sums):
    _refused_as_damaged(tmp_path, sums=sums)


def test_a_refused_delta_makes_no_output_directory(tmp_path):
    _delta(tmp_path, files={"evil.tar": b"x"})
    run = _patch(tmp_path)
    assert_one_line_error(run, "x.delta", "damaged")
    assert not (tmp_path / "out").exists()


def test_sha256sum_lines_for_the_rebuilt_files_are_merged(tmp_path):
    before = _seed(tmp_path)
    new = b"B" * 2048 + TAIL
    _delta(tmp_path, sums={"sha256sum-amd64.txt": {NEW: _sha(new)}})
    run = _patch(tmp_path)
    assert run.code == 0, run.stderr
    sums = (tmp_path / "out" / "sha256sum-amd64.txt").read_text()
    assert sums == f"{_sha(new)}  {NEW}\n" + before["sha256sum-amd64.txt"].decode()


def test_copies_that_make_more_than_the_new_bundle_are_refused_before_writing(tmp_path):
    """A 20-byte recipe entry repeated: 20 GiB written before the final hash says no."""
    base = b"B" * (1 << 20)
    _delta(tmp_path, base=base, pieces=[{"copy": {"offset": 0, "size": 1 << 20}}] * 20_000)
    started = time.monotonic()
    run = _patch(tmp_path, timeout=60)
    assert_one_line_error(run, "x.delta", "damaged")
    assert time.monotonic() - started < 20
    _untouched(tmp_path, {})


def test_payload_ranges_read_again_and_again_are_refused_before_writing(tmp_path):
    """One carried MiB named 40,000 times: 40 GiB written for a bundle of one MiB."""
    tail = bytes(1 << 20)
    _delta(tmp_path, tail=tail, new=tail,
           pieces=[{"data": {"offset": 0, "size": len(tail), "sha256": _sha(tail)}}] * 40_000)
    started = time.monotonic()
    run = _patch(tmp_path)
    assert_one_line_error(run, "x.delta", "damaged")
    assert time.monotonic() - started < 20
    _untouched(tmp_path, {})


def _zstd_tar(blobs: list[bytes]) -> bytes:
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for data in blobs:
            info = tarfile.TarInfo("blobs/sha256/" + _sha(data))
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor().compress(tar.getvalue())


def test_a_blob_recompressed_again_and_again_is_refused_before_compressing(tmp_path):
    """5,000 members naming one 4 MiB blob of the base: 20 GiB to compress for a new bundle
    of a few bytes."""
    blob = bytes(4 << 20)
    member = {"digest": "sha256:" + _sha(blob), "size": len(blob)}
    _delta(tmp_path, base=_zstd_tar([blob]),
           pieces=[{"compress": {"level": 1, "end": 1024, "members": [member] * 5000}}])
    started = time.monotonic()
    run = _patch(tmp_path, timeout=120)
    assert_one_line_error(run, "x.delta", "damaged")
    assert time.monotonic() - started < 20
    _untouched(tmp_path, {})


def test_a_blob_named_twice_is_refused_whatever_size_the_recipe_claims(tmp_path):
    """The bound on what is compressed follows the new bundle's size, which the recipe gives:
    claimed large, it lets through 5,000 members naming one 4 MiB blob (20 GiB to compress);
    a bundle's tar holds each blob once."""
    blob = bytes(4 << 20)
    member = {"digest": "sha256:" + _sha(blob), "size": len(blob)}
    delta = _delta(tmp_path, base=_zstd_tar([blob]),
                   pieces=[{"compress": {"level": 1, "end": 1024, "members": [member] * 5000}}])
    _claim(delta, 1 << 30)
    started = time.monotonic()
    run = _patch(tmp_path, timeout=120)
    assert_one_line_error(run, "x.delta", "damaged", "twice")
    assert time.monotonic() - started < 20
    _untouched(tmp_path, {})


def _claim(delta: Path, size: int) -> None:
    """The delta's recipe rewritten to claim a new bundle of `size` bytes."""
    data = delta.read_bytes()
    line, _, rest = data[len(fmt.MAGIC):].partition(b"\n")
    doc = json.loads(line)
    doc["new"]["size"] = size
    with open(delta, "wb") as out:
        fmt.write(out, doc, iter([rest.partition(b"\n")[2]]))


def test_a_bundle_larger_than_the_disk_is_refused_before_writing(tmp_path):
    """20,000 copies of a 1 MiB base pass the bound on what pieces write when the recipe
    claims a new bundle of 1 PiB; the disk bounds the claim."""
    base = b"B" * (1 << 20)
    delta = _delta(tmp_path, base=base,
                   pieces=[{"copy": {"offset": 0, "size": 1 << 20}}] * 20_000)
    _claim(delta, 1 << 50)
    started = time.monotonic()
    run = _patch(tmp_path)
    assert_one_line_error(run, "bytes free", "nothing was written")
    assert run.code == 3
    assert time.monotonic() - started < 20
    _untouched(tmp_path, {})


def test_recipe_text_in_messages_is_escaped(tmp_path):
    """The zstd version a delta says it was made with reaches the error line."""
    _delta(tmp_path, base=_zstd_tar([b"x" * 100]),
           pieces=[{"compress": {"level": 3, "end": 1024, "members": []}}],
           zstd="\x1b]0;pwned\x07\x1b[2J")
    run = _patch(tmp_path)
    assert_one_line_error(run, "nothing was written")
    assert "\x1b" not in run.stderr and "\x07" not in run.stderr
    _untouched(tmp_path, {})


def test_inspect_escapes_what_a_delta_says(tmp_path):
    _delta(tmp_path, layers="\x1b[2Jpreserve")
    run = bundler("inspect", str(tmp_path / "x.delta"))
    assert run.code == 0, run.stderr
    assert "\x1b" not in run.stdout


def test_a_manifest_that_records_another_bundle_is_refused(tmp_path):
    """The carried checksum manifest is what verify and place check the rebuilt bundle
    against: one that records other bytes than the recipe's is a forged delta."""
    manifest = json.dumps({"bundle": {"name": NEW, "size": 1, "sha256": "3" * 64}}).encode()
    _delta(tmp_path, files={STEM + ".manifest.json": manifest})
    run = _patch(tmp_path)
    assert_one_line_error(run, "x.delta", "damaged")
    _untouched(tmp_path, {})
