"""split, join, and verify, place and inspect of a parts list, on real bundles."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bundler.bundleformat import parts
from tests.cli_helpers import assert_one_line_error, build_args, bundler
from tests.conftest import BUNDLE, STEM

LIST = BUNDLE + parts.LIST_SUFFIX
MANIFEST = STEM + ".manifest.json"
SIZE = 100_000


def _split(source_dir: Path, out: Path, size: str = str(SIZE)) -> list[str]:
    run = bundler("split", str(source_dir / BUNDLE), "--size", size, "-o", str(out))
    assert run.code == 0, run.stderr
    assert run.stdout.startswith(f"wrote {out / LIST}: ")
    return sorted(os.listdir(out))


def _finals(directory: Path) -> list[str]:
    """What is in `directory`, failing on any temporary left there."""
    names = sorted(os.listdir(directory))
    assert [n for n in names if n.endswith(".partial")] == [], names
    return names


@pytest.fixture
def cut(builds, tmp_path) -> Path:
    """The preserve bundle cut into parts of SIZE bytes, its checksum manifest beside them."""
    out = tmp_path / "parts"
    _split(builds["p1"], out)
    shutil.copy(builds["p1"] / MANIFEST, out)
    return out


@pytest.mark.parametrize("build", ["p1", "u1"])
def test_split_verify_join_gives_the_same_bundle(builds, tmp_path, build):
    bundle = (builds[build] / BUNDLE).read_bytes()
    out = tmp_path / "parts"
    names = _split(builds[build], out)
    count = -(-len(bundle) // SIZE)
    assert count >= 3
    assert names == sorted([LIST, *parts.part_names(BUNDLE, count)])
    assert all((out / n).stat().st_size <= SIZE for n in names if n != LIST)
    # The parts are the bundle's bytes in order, and the list records them.
    assert b"".join((out / n).read_bytes() for n in parts.part_names(BUNDLE, count)) == bundle
    listed = parts.read(out / LIST)
    assert listed.size == len(bundle) and listed.name == BUNDLE
    # Deterministic: the same bundle cut again gives the same list, byte for byte.
    again = tmp_path / "again"
    _split(builds[build], again)
    assert (again / LIST).read_bytes() == (out / LIST).read_bytes()
    shutil.copy(builds[build] / MANIFEST, out)
    run = bundler("verify", str(out / LIST), "--require-checksum")
    assert run.code == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"OK {out / LIST}: 3 images, ")
    joined = tmp_path / "joined"
    run = bundler("join", str(out / LIST), "-o", str(joined))
    assert run.code == 0, run.stderr
    assert _finals(joined) == [BUNDLE]
    assert (joined / BUNDLE).read_bytes() == bundle


def test_a_bundle_within_the_size_is_one_part_and_the_default_fits_fat32(builds, tmp_path):
    run = bundler("split", str(builds["p1"] / BUNDLE), "-o", str(tmp_path))
    assert run.code == 0, run.stderr
    assert "1 part of at most 4294967295 bytes" in run.stdout
    assert _finals(tmp_path) == [BUNDLE + ".000", LIST]


def test_verify_reads_the_joined_stream_not_only_the_hashes(builds, tmp_path):
    # A list made from a damaged bundle is consistent with its parts: only verifying the
    # content joined from them finds the damage.
    src = tmp_path / "src"
    src.mkdir()
    data = bytearray((builds["p1"] / BUNDLE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (src / BUNDLE).write_bytes(data)
    _split(src, tmp_path / "parts")
    run = bundler("verify", str(tmp_path / "parts" / LIST))
    assert run.code == 1
    assert run.stdout.splitlines()[-1].startswith(f"FAILED {tmp_path / 'parts' / LIST}")


def test_split_refuses_a_bundle_its_checksum_manifest_does_not_vouch_for(builds, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(builds["p1"], src)
    doc = json.loads((src / MANIFEST).read_text())
    doc["bundle"]["sha256"] = "0" * 64
    (src / MANIFEST).write_text(json.dumps(doc))
    run = bundler("split", str(src / BUNDLE), "--size", str(SIZE), "-o", str(tmp_path / "out"))
    assert_one_line_error(run, BUNDLE, "the checksum manifest says", "nothing written")
    assert run.code == 1
    assert _finals(tmp_path / "out") == []


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(data)


PART_DAMAGE = {
    "flipped": (_flip, "damaged (sha256 "),
    "missing": (lambda p: p.unlink(), "missing"),
    "truncated": (lambda p: os.truncate(p, p.stat().st_size - 1), "(truncated)"),
    "extended": (lambda p: p.write_bytes(p.read_bytes() + b"\0"), "(too long)"),
    "a symlink": (lambda p: (p.rename(p.with_name("elsewhere")),
                             p.symlink_to("elsewhere")), "is a symbolic link; not followed"),
}


@pytest.mark.parametrize("damage", PART_DAMAGE)
def test_each_damaged_part_is_named_and_nothing_is_joined_or_placed(cut, tmp_path, damage):
    change, said = PART_DAMAGE[damage]
    change(cut / f"{BUNDLE}.001")
    run = bundler("verify", str(cut / LIST))
    assert run.code == 1
    assert run.stdout.splitlines() == [f"{cut / LIST}: {BUNDLE}.001: " + run.stdout.split(
        f"{BUNDLE}.001: ", 1)[1].splitlines()[0], f"FAILED {cut / LIST}: 1 problem"]
    assert said in run.stdout
    joined = tmp_path / "joined"
    run = bundler("join", str(cut / LIST), "-o", str(joined))
    assert_one_line_error(run, f"{BUNDLE}.001: ", said, "nothing joined")
    assert run.code == 1 and _finals(joined) == []
    images = tmp_path / "images"
    run = bundler("place", str(cut / LIST), "--images-dir", str(images))
    assert_one_line_error(run, f"{BUNDLE}.001: ", said, "nothing placed")
    assert not images.exists()


def test_verify_names_every_damaged_part_so_only_those_are_sent_again(cut):
    _flip(cut / f"{BUNDLE}.000")
    (cut / f"{BUNDLE}.002").unlink()
    run = bundler("verify", str(cut / LIST))
    assert run.code == 1
    lines = run.stdout.splitlines()
    assert len(lines) == 3 and lines[2] == f"FAILED {cut / LIST}: 2 problems"
    assert lines[0].startswith(f"{cut / LIST}: {BUNDLE}.000: damaged (sha256 ")
    assert lines[1] == f"{cut / LIST}: {BUNDLE}.002: missing"


def _edit_size(doc: dict) -> None:
    doc["parts"][-1]["size"] -= 1  # the last: the offsets still follow each other
    doc["whole"]["size"] -= 1


def _edit_digest(doc: dict) -> None:
    doc["parts"][1]["sha256"] = "0" * 64


def _edit_order(doc: dict) -> None:
    doc["parts"][0], doc["parts"][1] = doc["parts"][1], doc["parts"][0]


def _edit_name(doc: dict) -> None:
    doc["parts"][1]["name"] = "../" + doc["parts"][1]["name"]


def _edit_whole(doc: dict) -> None:
    doc["whole"]["sha256"] = "0" * 64


LIST_EDITS = {  # edit, exit code, what the line says
    "size": (_edit_size, 1, "bytes, the parts list says"),
    "digest": (_edit_digest, 1, f"{BUNDLE}.001: damaged"),
    "order": (_edit_order, 2, f"parts[0] ('{BUNDLE}.001'): offset"),
    "name with a slash": (_edit_name, 2, "parts[1].name '../"),
    "whole digest": (_edit_whole, 1, "whole.sha256 says 0000"),
}


@pytest.mark.parametrize("edit", LIST_EDITS)
def test_an_edited_parts_list_is_refused_naming_what_is_wrong(cut, tmp_path, edit):
    change, code, said = LIST_EDITS[edit]
    doc = json.loads((cut / LIST).read_text())
    change(doc)
    (cut / LIST).write_text(json.dumps(doc))
    joined = tmp_path / "joined"
    run = bundler("join", str(cut / LIST), "-o", str(joined))
    assert_one_line_error(run, said)
    assert run.code == code
    assert not joined.exists() or _finals(joined) == []
    run = bundler("verify", str(cut / LIST))
    assert run.code == code, run
    assert (said if edit != "whole digest" else "the parts list says") in \
        run.stdout + run.stderr


def test_place_of_a_parts_list_lands_the_joined_bundle_only(builds, cut, tmp_path):
    images = tmp_path / "k3s" / "agent" / "images"
    run = bundler("place", str(cut / LIST), "--images-dir", str(images))
    assert run.code == 0, run.stderr
    assert run.stdout.startswith(f"placed {images / BUNDLE} (")
    assert _finals(images) == [BUNDLE]
    assert (images / BUNDLE).read_bytes() == (builds["p1"] / BUNDLE).read_bytes()
    run = bundler("place", str(cut / LIST), "--images-dir", str(images))
    assert run.code == 0 and run.stdout.startswith("unchanged ")


def test_inspect_shows_what_the_list_holds(builds, cut):
    run = bundler("inspect", str(cut / LIST), "--json")
    assert run.code == 0, run.stderr
    info = json.loads(run.stdout)
    size = (builds["p1"] / BUNDLE).stat().st_size
    assert info["kind"] == "parts list" and info["verified"] is False
    assert info["whole"]["name"] == BUNDLE and info["whole"]["size"] == size
    assert [p["name"] for p in info["parts"]] == parts.part_names(BUNDLE, len(info["parts"]))
    run = bundler("inspect", str(cut / LIST))
    assert run.code == 0
    assert run.stdout.startswith(f"{cut / LIST}: parts list of {BUNDLE}, {size} bytes in ")
    assert f"  {BUNDLE}.001  offset {SIZE}  {SIZE} bytes  sha256 " in run.stdout


def test_a_new_split_removes_the_parts_an_older_one_left(builds, tmp_path):
    out = tmp_path / "out"
    many = _split(builds["p1"], out)
    fewer = _split(builds["p1"], out, str(SIZE * 2))
    assert len(fewer) < len(many) and set(fewer) < set(many)
    assert parts.read(out / LIST).parts[-1].name == fewer[-2]


@pytest.mark.parametrize("args, said", [
    (["--size", "4G"], "--size '4G': want a number of bytes"),
    (["--size", "0"], "--size '0'"),
    (["--size", "1"], "parts, more than 10000; choose a larger part size"),
])
def test_a_size_that_says_no_exact_unit_or_too_many_parts_is_refused(builds, tmp_path, args,
                                                                     said):
    run = bundler("split", str(builds["p1"] / BUNDLE), *args, "-o", str(tmp_path / "o"))
    assert_one_line_error(run, said)
    assert run.code == 2
    assert not (tmp_path / "o").exists() or _finals(tmp_path / "o") == []


def _random_bundle(path: Path, mib: int = 64) -> Path:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    return path


def _interrupted(args: list[str], out: Path, finished) -> int:
    """Run `bundler ARGS` four times, each sent SIGINT once a temporary appears in `out`:
    a run caught is one line and exit 130 with no final name in `out`; one that ended first
    is `finished(out)` (which checks and clears its outputs). How many were caught."""
    caught = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "bundler", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and any(n.endswith(".partial") for n in os.listdir(out)):
                proc.send_signal(signal.SIGINT)
                caught += 1
                break
            time.sleep(0.001)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 130:
            assert err == "bundler: error: interrupted\n"
            assert _finals(out) == []
        else:
            assert proc.returncode == 0, err
            finished(out)
    return caught


def test_an_interrupted_split_leaves_nothing_under_a_final_name(tmp_path):
    big = _random_bundle(tmp_path / "big.tar.zst")
    out = tmp_path / "out"

    def finished(out: Path) -> None:
        assert len(_finals(out)) == 65
        shutil.rmtree(out)

    caught = _interrupted(["split", str(big), "--size", "1MiB", "-o", str(out)], out, finished)
    assert caught, "no split was caught while writing"


def test_a_signed_bundle_s_parts_verify_and_place_with_its_key(fixture_registry, tmp_path):
    from tests.test_imports import _keypair

    key, pub = _keypair(tmp_path)
    run = bundler(*build_args(fixture_registry, tmp_path, ["busybox:1.36.1"], "--sign-key",
                              str(key)))
    assert run.code == 0, run.stderr
    out = tmp_path / "parts"
    _split(tmp_path / "dist", out, "50kB")
    for name in (MANIFEST, MANIFEST + ".sig"):
        shutil.copy(tmp_path / "dist" / name, out)
    run = bundler("verify", str(out / LIST), "--key", str(pub))
    assert run.code == 0, run.stdout + run.stderr
    images = tmp_path / "images"
    run = bundler("place", str(out / LIST), "--key", str(pub), "--images-dir", str(images))
    assert run.code == 0, run.stderr
    assert (images / BUNDLE).read_bytes() == (tmp_path / "dist" / BUNDLE).read_bytes()
    # The signature vouches for the whole's name: a list naming another whole is refused.
    doc = json.loads((out / LIST).read_text())
    doc["whole"]["name"] = "other.tar.zst"
    (out / "other.tar.zst.parts.json").write_text(json.dumps(doc))
    for name in (".manifest.json", ".manifest.json.sig"):
        shutil.copy(out / (STEM + name), out / ("other" + name))
    run = bundler("verify", str(out / "other.tar.zst.parts.json"), "--key", str(pub))
    assert_one_line_error(run, "other.tar.zst", BUNDLE, "--allow-rename")


def test_an_interrupted_join_leaves_nothing_under_the_bundle_s_name(tmp_path):
    big = _random_bundle(tmp_path / "big.tar.zst")
    run = bundler("split", str(big), "--size", "8MiB", "-o", str(tmp_path / "parts"))
    assert run.code == 0, run.stderr
    out = tmp_path / "joined"

    def finished(out: Path) -> None:
        assert _finals(out) == ["big.tar.zst"]
        (out / "big.tar.zst").unlink()

    caught = _interrupted(["join", str(tmp_path / "parts" / "big.tar.zst.parts.json"), "-o",
                           str(out)], out, finished)
    assert caught, "no join was caught while writing"
