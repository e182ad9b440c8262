"""verify against good bundles, damaged ones, and crafted tars."""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import tarfile
from pathlib import Path

import pytest
import zstandard

from bundler.bundleformat import compress
from bundler.checks.verify import verify
from tests.bundlefiles import members, plain_tar, write_zst
from tests.cli_helpers import assert_one_line_error, bundler
from tests.conftest import BUNDLE, STEM


def _alone(src: Path, tmp: Path) -> Path:
    """A copy of the bundle with no checksum files beside it."""
    tmp.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, tmp / BUNDLE))


@pytest.mark.parametrize("build", ["p1", "u1"])
def test_good_bundles_pass(builds, build):
    run = bundler("verify", str(builds[build] / BUNDLE))
    assert run.code == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"OK {builds[build] / BUNDLE}: 3 images, ")
    report = verify(builds[build] / BUNDLE)
    assert report.ok and len(report.checked_against) == 2


def test_no_checksum_files_is_said_once_and_content_still_checked(builds, tmp_path):
    run = bundler("verify", str(_alone(builds["p1"] / BUNDLE, tmp_path)))
    assert run.code == 0
    assert run.stderr.count("no checksum file beside") == 1


def test_bit_flips_anywhere_are_caught(builds, tmp_path):
    data = (builds["p1"] / BUNDLE).read_bytes()
    rng = random.Random(7)
    for i, offset in enumerate(rng.sample(range(len(data)), 25)):
        damaged = bytearray(data)
        damaged[offset] ^= 1 << rng.randrange(8)
        d = tmp_path / f"c{i}"
        shutil.copytree(builds["p1"], d)
        (d / BUNDLE).write_bytes(damaged)
        report = verify(d / BUNDLE)
        assert not report.ok, offset
        assert any(BUNDLE in p for p in report.problems), report.problems  # outer checksum


def test_bit_flips_without_checksum_files_are_caught_by_content(builds, tmp_path):
    data = (builds["p1"] / BUNDLE).read_bytes()
    rng = random.Random(8)
    # Past the frame header: a flip there can only change the declared window.
    for i, offset in enumerate(rng.sample(range(8, len(data)), 25)):
        damaged = bytearray(data)
        damaged[offset] ^= 1 << rng.randrange(8)
        path = tmp_path / f"f{i}" / BUNDLE
        path.parent.mkdir()
        path.write_bytes(damaged)
        report = verify(path)
        assert not report.ok, (offset, report.notes)
        assert report.problems[0].split(":")[0] in ("zstd", "tar") or "blobs/sha256/" in \
            report.problems[0] or ".json" in report.problems[0], report.problems


def test_truncations_are_caught(builds, tmp_path):
    data = (builds["u1"] / BUNDLE).read_bytes()
    for i, cut in enumerate([1, 4, 6, 100, len(data) // 3, len(data) // 2, len(data) - 5,
                             len(data) - 1]):
        path = tmp_path / f"t{i}" / BUNDLE
        path.parent.mkdir()
        path.write_bytes(data[:cut])
        report = verify(path)
        assert not report.ok, cut
        assert any("truncated" in p or "cannot decode" in p or "ends" in p
                   for p in report.problems), report.problems


@pytest.mark.parametrize("build", ["p1", "u1"])
def test_flipped_byte_in_any_member_is_named(builds, build, tmp_path):
    tar = plain_tar(builds[build] / BUNDLE)
    rng = random.Random(9)
    for i, member in enumerate(m for m in members(tar) if m.isfile()):
        damaged = bytearray(tar)
        damaged[member.offset_data + rng.randrange(member.size)] ^= 0x20
        path = write_zst(bytes(damaged), tmp_path / f"m{i}.tar.zst")
        report = verify(path)
        assert not report.ok, member.name
        assert any(member.name in p for p in report.problems), (member.name, report.problems)


def _crafted(tar: bytes, extra: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """The bundle's tar with members appended before its end-of-archive marker."""
    buf = io.BytesIO(tar)
    with tarfile.open(fileobj=buf, mode="a") as t:
        for info, data in extra:
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _info(name: str, kind=tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


@pytest.mark.parametrize(("name", "kind", "data", "link", "fragment"), [
    ("../x", tarfile.REGTYPE, b"x", "", "climbs out"),
    ("/abs", tarfile.REGTYPE, b"x", "", "absolute name"),
    ("blobs/sha256/" + "a" * 64, tarfile.SYMTYPE, b"", "/etc/passwd", "symlink not allowed"),
    ("blobs/sha256/" + "b" * 64, tarfile.LNKTYPE, b"", "index.json", "hard link not allowed"),
    ("dev/null", tarfile.CHRTYPE, b"", "", "character device not allowed"),
    ("fifo", tarfile.FIFOTYPE, b"", "", "fifo not allowed"),
    ("index.json", tarfile.REGTYPE, b'{"schemaVersion":2,"manifests":[]}', "", "duplicate"),
    ("notes.txt", tarfile.REGTYPE, b"hello", "", "unexpected member"),
    ("etc", tarfile.DIRTYPE, b"", "", "'etc/' (tar byte"),  # one problem: an unexpected dir
    ("./blobs/sha256", tarfile.DIRTYPE, b"", "", "duplicate of an earlier member"),
])
def test_crafted_members_are_refused(builds, tmp_path, name, kind, data, link, fragment):
    tar = _crafted(plain_tar(builds["p1"] / BUNDLE), [(_info(name, kind, len(data), link),
                                                        data)])
    report = verify(write_zst(tar, tmp_path / BUNDLE))
    assert any(fragment in p for p in report.problems), report.problems
    if kind == tarfile.DIRTYPE and name == "etc":
        assert report.problems == [report.problems[0]]
        assert report.problems[0].endswith(": unexpected directory"), report.problems


def test_member_after_the_end_is_refused(builds, tmp_path):
    tar = plain_tar(builds["p1"] / BUNDLE)
    extra = io.BytesIO()
    with tarfile.open(fileobj=extra, mode="w") as t:
        t.addfile(_info("index.json", size=2), io.BytesIO(b"{}"))
    report = verify(write_zst(tar + extra.getvalue(), tmp_path / BUNDLE))
    assert any("data after the end of the tar archive" in p for p in report.problems)


def test_oversized_metadata_is_refused(tmp_path):
    big = b" " * (5 << 20)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.addfile(_info("index.json", size=len(big)), io.BytesIO(big))
    report = verify(write_zst(buf.getvalue(), tmp_path / BUNDLE))
    assert any("more than" in p and "index.json" in p for p in report.problems), report.problems


def test_oversized_window_is_refused(builds, tmp_path):
    tar = plain_tar(builds["u1"] / BUNDLE)
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(out) as w:
        w.write(tar)
        w.flush(zstandard.FLUSH_FRAME)
        path = tmp_path / BUNDLE
        path.write_bytes(out.getvalue())
    report = verify(path)
    assert any("exceeds 2^25" in p for p in report.problems), report.problems


def _windowed(tar: bytes, path: Path, window_log: int, mantissa: int = 0) -> Path:
    """`tar` as one zstd frame whose header declares 2^window_log bytes of window plus
    `mantissa` eighths of that (zstd's window descriptor; encoders write mantissa 0)."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(
            out, closefd=False) as w:
        w.write(tar)  # streamed, no size up front: the header states a window
    data = bytearray(out.getvalue())
    assert data[4] & 0x20 == 0 and data[5] == (window_log - 10) << 3  # not single-segment
    data[5] |= mantissa
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("window_log", "mantissa", "window"), [
    (26, 0, 1 << 26),
    (25, 1, (1 << 25) + (1 << 22)),  # one eighth more than K3s's limit, by the mantissa alone
    (25, 7, (1 << 25) + 7 * (1 << 22)),
])
def test_window_just_past_the_limit_is_refused(builds, tmp_path, window_log, mantissa, window):
    path = _windowed(plain_tar(builds["u1"] / BUNDLE), tmp_path / BUNDLE, window_log, mantissa)
    report = verify(path)
    assert not report.ok
    assert f"zstd frame at byte 0: window of {window} bytes exceeds 2^25, the most K3s " \
        "decodes" in report.problems, report.problems


def test_window_of_exactly_the_limit_is_accepted(builds, tmp_path):
    path = _windowed(plain_tar(builds["u1"] / BUNDLE), tmp_path / BUNDLE, 25)
    report = verify(path)
    assert report.ok, report.problems
    assert [f.window_size for f in compress.frames(compress.Seeking(open(path, "rb")))] \
        == [1 << 25]


def test_checksum_manifest_mismatch(builds, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(builds["p1"], d)
    other = builds["u1"] / f"{STEM}.manifest.json"
    report = verify(d / BUNDLE, manifest=other)
    assert any("checksum manifest says" in p for p in report.problems), report.problems


def test_unreadable_input_is_exit_2(tmp_path):
    run = bundler("verify", str(tmp_path / "missing.tar.zst"))
    assert_one_line_error(run, "missing.tar.zst", "cannot read")
    assert run.code == 2


def test_json_report(builds):
    import json

    run = bundler("verify", "--json", str(builds["u1"] / BUNDLE))
    report = json.loads(run.stdout)
    assert run.code == 0 and report["ok"] is True and len(report["images"]) == 3


@pytest.mark.parametrize("where", ["start", "middle"])
def test_file_checksum_covers_the_whole_file_when_the_tar_breaks_early(builds, tmp_path, where):
    # The tar is read a few chunks ahead on another thread; a break stops that thread and the
    # rest of the file is still hashed, by this one, in order.
    import hashlib

    tar = bytearray(plain_tar(builds["p1"] / BUNDLE))
    cut = 0 if where == "start" else len(tar) // 2
    tar[cut + 100 : cut + 600] = b"\xff" * 500  # a broken header (or data) there
    tar += random.Random(2).randbytes(12 << 20)  # several chunks past the break
    path = write_zst(bytes(tar), tmp_path / BUNDLE)
    report = verify(path)
    assert not report.ok
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.size == path.stat().st_size


def _with_member(tar: bytes, name: str, data: bytes) -> bytes:
    """The bundle's tar with member `name` holding `data` instead (members in their order)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar)) as src, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            body = src.extractfile(info).read() if info.isfile() else b""
            if info.name == name:
                body, info.size = data, len(data)
            dst.addfile(info, io.BytesIO(body) if info.isfile() else None)
    return out.getvalue()


def _docker_twists() -> list:
    def entry0(change):
        return lambda docs: (change(docs[0]), docs)[1]

    return [
        ("manifest.json", entry0(lambda e: e.update(RepoTags=[])), "entry 0 disagrees"),
        ("manifest.json", entry0(lambda e: e.update(RepoTags=["docker.io/x/y:1"])),
         "entry 0 disagrees"),
        ("manifest.json", entry0(lambda e: e["Layers"].reverse() or e["Layers"].append(
            e["Layers"][0])), "entry 0 disagrees"),
        ("manifest.json", entry0(lambda e: e["Layers"].reverse()), "entry 0 disagrees"),
        ("manifest.json", entry0(lambda e: e.update(Config=e["Layers"][0])),
         "entry 0 disagrees"),
        ("manifest.json", entry0(lambda e: e.update(Parent="")), "entry 0 disagrees"),
        ("manifest.json", lambda docs: docs[:-1], "does not list the 3 images"),
        ("manifest.json", lambda docs: docs[::-1], "disagrees"),
        ("repositories", lambda repos: {}, "repositories: disagrees"),
        ("repositories", lambda repos: {k: {t: "0" * 64 for t in v} for k, v in repos.items()},
         "repositories: disagrees"),
        ("repositories", lambda repos: {**repos, "docker.io/x/y": {"1": "0" * 64}},
         "repositories: disagrees"),
    ]


@pytest.mark.parametrize(("name", "twist", "fragment"), _docker_twists())
def test_docker_views_must_be_what_the_writer_writes(builds, tmp_path, name, twist, fragment):
    """manifest.json and repositories are checked against archive.py's own output for the
    images index.json names: any other entry, order, tag, layer list or extra key fails."""
    tar = plain_tar(builds["u1"] / BUNDLE)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        doc = json.loads(t.extractfile(name).read())
    changed = json.dumps(twist(json.loads(json.dumps(doc)))).encode()
    report = verify(write_zst(_with_member(tar, name, changed), tmp_path / BUNDLE))
    assert any(fragment in p for p in report.problems), report.problems
    # the same documents, only written differently, still verify
    same = json.dumps(doc, indent=1).encode()
    assert verify(write_zst(_with_member(tar, name, same), tmp_path / "same.tar.zst")).ok


def test_on_blob_writers_get_each_blob_as_verify_reads_it(builds, tmp_path):
    """push's hook: every blob's bytes, in order, to the writer on_blob gave for it (none
    when it gave None), the writer closed at the member's end, even when the bundle is bad."""
    got: dict[str, tuple[int, bytes]] = {}

    class Writer:
        def __init__(self, digest: str, size: int):
            self.digest, self.size, self.parts = digest, size, []

        def write(self, data: bytes) -> None:
            self.parts.append(data)

        def close(self) -> None:
            got[self.digest] = (self.size, b"".join(self.parts))

    asked: list[str] = []

    def on_blob(digest: str, size: int) -> Writer | None:
        asked.append(digest)
        return Writer(digest, size) if len(asked) % 2 else None

    report = verify(builds["p1"] / BUNDLE, on_blob=on_blob)
    assert report.ok and len(asked) == report.blobs == len(set(asked))
    assert sorted(got) == sorted(asked[::2])
    for digest, (size, data) in got.items():
        assert len(data) == size and "sha256:" + hashlib.sha256(data).hexdigest() == digest
    # the documents verify kept are the manifests and configs, each under its digest
    assert len(report.documents) >= 6
    for digest, data in report.documents.items():
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        assert data.startswith(b"{")
    # a member cut short: its writer is still closed, with what came
    tar = plain_tar(builds["u1"] / BUNDLE)
    last = max((m for m in members(tar) if m.isfile()), key=lambda m: m.offset_data)
    got.clear()
    asked.clear()
    cut = write_zst(tar[:last.offset_data + last.size // 2], tmp_path / BUNDLE)
    report = verify(cut, on_blob=lambda d, n: (asked.append(d), Writer(d, n))[1])
    assert not report.ok
    assert len(got) == len(asked) and got[asked[-1]][1] != b""
