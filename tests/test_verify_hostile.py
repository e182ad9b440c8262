"""verify against bundles built to exhaust it, to be read differently by Go, or to make it read
something else: every one refused with a line, in bounded memory and time, never a traceback."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from bundler.checks import verify as verify_module
from bundler.checks.verify import verify
from tests import imagegen as gen
from tests.bundlefiles import files, plain_tar, write_zst
from tests.cli_helpers import assert_one_line_error, bundler, measured
from tests.conftest import BUNDLE, STEM
from tests.tarcraft import END, GoError, go_read, member, pax, record, tarfile_archive

REPO_ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')


def _replaced(bundle: Path, name: str, data: bytes, out: Path) -> Path:
    """The bundle's tar with member `name` holding `data` instead, recompressed."""
    members = [(n, data if n == name else d) for n, d in files(plain_tar(bundle))]
    return write_zst(tarfile_archive(members), out)


def _blob(data: bytes) -> tuple[str, bytes]:
    return f"blobs/sha256/{gen.digest(data)[7:]}", data


def _peak(script: str, *args: str, timeout: float = 120) -> tuple[object, float]:
    """Run `script` in a fresh interpreter; (the OUT it sets, its own peak RSS in MiB)."""
    program = "import json, sys\n" + script + "\nprint(json.dumps(OUT))"
    m = measured([sys.executable, "-c", program, *args], timeout=timeout, cwd=REPO_ROOT)
    assert m.run.code == 0, m.run.stderr
    return json.loads(m.run.stdout.strip().splitlines()[-1]), m.peak_mib


_VERIFY_IN_CHILD = """
from bundler.checks.verify import verify
r = verify(sys.argv[1])
OUT = {"ok": r.ok, "count": r.problem_count, "kept": len(r.problems), "first": r.problems[:3]}
"""


def test_index_naming_one_huge_manifest_many_times_costs_it_once(builds, tmp_path):
    """The issue's case: index.json names one 30,000-layer manifest 100 times (it cost ~11 MB
    per entry, 2.1 GB at 200): memory and time stay those of one manifest."""
    layers = [{"mediaType": "", "digest": gen.digest(i.to_bytes(4, "big")), "size": 4}
              for i in range(30_000)]
    config = json.dumps({"os": "linux", "architecture": "amd64", "rootfs": {
        "type": "layers", "diff_ids": [d["digest"] for d in layers]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "config": {
        "mediaType": "", "digest": gen.digest(config), "size": len(config)},
        "layers": layers}).encode()
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": gen.digest(manifest), "size": len(manifest),
             "annotations": {"io.containerd.image.name": "docker.io/rancher/x:1"}}
    index = json.dumps({"schemaVersion": 2, "manifests": [entry] * 100}).encode()
    path = write_zst(tarfile_archive([LAYOUT, ("index.json", index), _blob(manifest),
                                      _blob(config)]), tmp_path / BUNDLE)
    assert path.stat().st_size < 4 << 20  # the digests are random: 2 MB
    _, floor = _peak("from bundler.checks.verify import verify\nOUT = None")
    assert floor < 60, floor  # the interpreter and verify's imports, not pytest's memory
    started = time.monotonic()
    out, rss = _peak(_VERIFY_IN_CHILD, str(path))
    took = time.monotonic() - started
    assert not out["ok"]
    # 30,000 missing layers, said once (not once per index entry), kept up to the cap
    assert 30_000 <= out["count"] < 31_000, out
    assert out["kept"] == verify_module.MAX_PROBLEMS_KEPT
    print(f"peak RSS {rss:.0f} MiB, interpreter and imports {floor:.0f} MiB, {took:.1f} s")
    assert rss - floor < 150, (rss, floor)
    assert took < 60, took


_FLOOR_IN_CHILD = """
import hashlib, zstandard
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    r = zstandard.ZstdDecompressor(max_window_size=1 << 25).stream_reader(
        f, read_across_frames=True)
    while b := r.read(1 << 20):
        h.update(b)
OUT = None
"""


def test_verify_needs_no_more_memory_than_decompressing_and_hashing(tmp_path):
    """Above its imports, verify's peak is the Python floor's (zstd's 32 MiB window and the
    1 MiB it reads at a time): the pieces of the stream in flight between its two threads
    and in the member checks stay within 1 MiB (at 1 MiB pieces: 2.8 MiB more than the floor)."""
    layer = os.urandom(40 << 20)
    tar = tarfile_archive([LAYOUT, _blob(layer)])
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=25)
    path = tmp_path / BUNDLE
    path.write_bytes(zstandard.ZstdCompressor(compression_params=params).compress(tar))
    del layer, tar
    _, imports = _peak("from bundler.checks.verify import verify\nOUT = None")
    _, bare = _peak("import hashlib, zstandard\nOUT = None")
    out, rss = _peak(_VERIFY_IN_CHILD, str(path))
    assert not out["ok"]  # index.json is missing: all the same, the stream was read whole
    _, floor = _peak(_FLOOR_IN_CHILD, str(path))
    print(f"verify {rss:.1f} MiB ({imports:.1f} imports), floor {floor:.1f} ({bare:.1f})")
    assert rss - imports <= floor - bare + 1, (rss, imports, floor, bare)


def _inflating_layer(size: int) -> bytes:
    zeros = bytes(1 << 20)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as g:
        for _ in range(size >> 20):
            g.write(zeros)
    return out.getvalue()


def test_a_layer_inflating_past_the_limit_stops_verify(tmp_path, monkeypatch):
    monkeypatch.setattr(verify_module, "INFLATION_FLOOR", 1 << 20)
    layer = _inflating_layer(64 << 20)  # 64 MiB of zeros in ~64 KB of gzip
    path = write_zst(tarfile_archive([LAYOUT, _blob(layer)]), tmp_path / BUNDLE)
    started = time.monotonic()
    report = verify(path, max_inflation=100)
    assert time.monotonic() - started < 10
    assert report.inflation_limited and not report.ok
    assert any("the inflation limit" in p for p in report.problems), report.problems
    # Raised far enough, the same layer is read to its end (and then fails for other reasons)
    report = verify(path, max_inflation=1e6)  # the bundle is ~2 KB: gzip of zeros, zstd
    assert not report.inflation_limited
    assert not any("inflation" in p for p in report.problems), report.problems


def test_the_tar_itself_inflating_past_the_limit_stops_verify_with_a_hint(tmp_path):
    """A 40 KB bundle whose tar holds a 1.5 GiB member of zeros: over the 1 GiB floor."""
    path = tmp_path / BUNDLE
    with open(path, "wb") as f, zstandard.ZstdCompressor(level=1).stream_writer(f) as w:
        info = tarfile.TarInfo("blobs/sha256/" + "0" * 64)
        info.size = 3 << 29
        w.write(info.tobuf(tarfile.PAX_FORMAT))
        zeros = bytes(1 << 20)
        for _ in range(info.size >> 20):
            w.write(zeros)
    assert path.stat().st_size < 1 << 20
    started = time.monotonic()
    run = bundler("verify", str(path), timeout=120)
    assert time.monotonic() - started < 60
    assert run.code == 1, run
    assert "the inflation limit" in run.stdout and "Traceback" not in run.stderr
    assert "--max-inflation" in run.stderr


def _index(entry_changes: dict | None = None, raw: bytes | None = None) -> bytes:
    return raw if raw is not None else json.dumps(entry_changes).encode()


@pytest.mark.parametrize(("mutate", "fragment"), [
    (lambda e: e.update(annotations="docker.io/x:1"),
     "manifests[0].annotations is not an object of strings"),
    (lambda e: e.update(platform=["linux"]), "manifests[0].platform is not an object"),
    (lambda e: e.update(size=float(e["size"])), "manifests[0].size is not an integer"),
    (lambda e: e.update(digest=["sha256:x"]), "manifests[0].digest is not a string"),
    (lambda e: e["annotations"].update({"io.containerd.image.name": 7}),
     "annotations is not an object of strings"),
    (lambda e: e.update(Digest=e["digest"]), "duplicate key"),
    (lambda e: e.update(Annotations=e.pop("annotations")), "read as 'annotations' by Go"),
    (lambda e: e.update(platform={"architecture": "amd64", "os": 5}),
     "manifests[0].platform.os is not a string"),
    (lambda e: e.update(urls=[1]), "manifests[0].urls[0] is not a string"),
    (lambda e: e.update(mediaType="application/vnd.oci.image.index.v1+json"),
     "is not an image manifest's"),
    (lambda e: e.pop("mediaType"), "is not an image manifest's"),
])
def test_index_entries_of_the_wrong_shape_are_problems(builds, tmp_path, mutate, fragment):
    bundle = builds["p1"] / BUNDLE
    index = json.loads(dict(files(plain_tar(bundle)))["index.json"])
    mutate(index["manifests"][0])
    path = _replaced(bundle, "index.json", json.dumps(index).encode(), tmp_path / BUNDLE)
    report = verify(path)
    assert not report.ok
    assert any(fragment in p for p in report.problems), report.problems


@pytest.mark.parametrize(("data", "fragment"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"schemaVersion": 2, "manifests": NaN}', "NaN"),
    (b'"just a string"', "the document is not an object"),
    (b'{"manifests": {"a": 1}}', "manifests is not a list"),
    (b'{"manifests": [1, "x", null]}', "manifests[0] is not an object"),
    (b'{"schemaVersion": "2", "manifests": []}', "schemaVersion is not an integer"),
])
def test_index_json_of_the_wrong_shape_is_a_problem(builds, tmp_path, data, fragment):
    path = _replaced(builds["p1"] / BUNDLE, "index.json", data, tmp_path / BUNDLE)
    run = bundler("verify", str(path))
    assert run.code == 1 and "Traceback" not in run.stderr, run
    assert fragment in run.stdout, run.stdout


@pytest.mark.parametrize("doc", [
    {"schemaVersion": 1, "bundle": "x", "images": "y", "arch": ["amd64"]},
    {"schemaVersion": 1, "bundle": {"size": [1]}, "images": [1, {"reference": 5},
                                                            {"reference": "docker.io/a:1",
                                                             "layers": "x"}]},
])
def test_checksum_manifest_of_the_wrong_shape_is_a_problem(builds, tmp_path, doc):
    d = tmp_path / "d"
    shutil.copytree(builds["p1"], d)
    (d / f"{STEM}.manifest.json").write_text(json.dumps(doc))
    run = bundler("verify", str(d / BUNDLE))
    assert run.code == 1 and "Traceback" not in run.stderr, run
    assert "FAILED" in run.stdout


def test_checksum_manifest_that_is_not_json_names_the_file(builds, tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("sha256 abc\n")
    run = bundler("verify", str(builds["p1"] / BUNDLE), "--manifest", str(bad))
    assert_one_line_error(run, str(bad), "not JSON")
    assert run.code == 2


def test_bundle_that_is_a_device_or_fifo_is_refused_at_once(tmp_path):
    link = tmp_path / BUNDLE
    link.symlink_to("/dev/zero")
    run = bundler("verify", str(link), timeout=30)
    assert_one_line_error(run, str(link), "not a regular file (a character device)")
    assert run.code == 2
    fifo = tmp_path / "fifo.tar.zst"
    os.mkfifo(fifo)
    run = bundler("verify", str(fifo), timeout=30)  # must not block in open()
    assert_one_line_error(run, str(fifo), "not a regular file (a FIFO)")


@pytest.mark.parametrize("sidecar", [f"{STEM}.manifest.json", "sha256sum-amd64.txt"])
def test_sidecars_found_beside_the_bundle_are_not_read_through_symlinks(builds, tmp_path,
                                                                        sidecar):
    d = tmp_path / "d"
    shutil.copytree(builds["p1"], d)
    (d / sidecar).unlink()
    (d / sidecar).symlink_to("/etc/passwd")
    run = bundler("verify", str(d / BUNDLE))
    assert_one_line_error(run, sidecar, "is a symbolic link; not followed")
    assert run.code == 2


def test_a_huge_sha256sum_file_is_not_read_whole(builds, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(builds["p1"], d)
    with open(d / "sha256sum-big.txt", "wb") as f:
        f.truncate(600 << 20)  # sparse: 600 MB that cost no disk
    started = time.monotonic()
    run = bundler("verify", str(d / BUNDLE))
    assert time.monotonic() - started < 20
    assert_one_line_error(run, "sha256sum-big.txt", "too large for a sha256sum file")


def test_require_checksum(builds, tmp_path):
    alone = tmp_path / "alone" / BUNDLE
    alone.parent.mkdir()
    shutil.copy(builds["p1"] / BUNDLE, alone)
    run = bundler("verify", "--require-checksum", str(alone))
    assert run.code == 1
    assert "no checksum file vouches for it" in run.stdout
    assert bundler("verify", str(alone)).code == 0  # without the flag: a note, and OK
    assert bundler("verify", "--require-checksum", str(builds["p1"] / BUNDLE)).code == 0


@pytest.mark.parametrize(("content", "fragment"), [
    (b"", "empty file, not a bundle"),
    (tarfile_archive([("index.json", b"{}")]), "a plain tar, not zstd-compressed"),
    (gzip.compress(b"x" * 1000), "gzip-compressed, not zstd"),
    (b"hello world", "not a zstd file"),
])
def test_files_that_are_not_zstd_say_what_they_are(tmp_path, content, fragment):
    path = tmp_path / BUNDLE
    path.write_bytes(content)
    run = bundler("verify", str(path))
    assert run.code == 1, run
    assert f"{BUNDLE}: {fragment}" in run.stdout
    assert "FAILED" in run.stdout and "1 problem\n" in run.stdout


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _small_bundle(path: Path, *, layer: bytes | None = None, layer_type: str = OCI_LAYER,
                  manifest_extra: dict | None = None, config_extra: dict | None = None,
                  names: tuple[str, ...] = ("docker.io/rancher/x:1",),
                  entry_extra: dict | None = None, diff_id: str | None = None) -> Path:
    """A one-image bundle in bundler's layout, made by hand, with the given twists."""
    layer = tarfile_archive([("etc/hostname", b"x\n")]) if layer is None else layer
    diff_id = diff_id or gen.digest(gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer)
    config = json.dumps({"os": "linux", "architecture": "amd64",
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                         **(config_extra or {})}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "", "digest": gen.digest(config),
                                      "size": len(config)},
                           "layers": [{"mediaType": layer_type, "digest": gen.digest(layer),
                                       "size": len(layer)}],
                           **(manifest_extra or {})}).encode()
    entries = [{"mediaType": OCI_MANIFEST, "digest": gen.digest(manifest), "size": len(manifest),
                "annotations": {"io.containerd.image.name": name}, **(entry_extra or {})}
               for name in names]
    index = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
    docker = json.dumps([{"Config": f"blobs/sha256/{gen.digest(config)[7:]}", "RepoTags": [name],
                          "Layers": [f"blobs/sha256/{gen.digest(layer)[7:]}"]}
                         for name in names]).encode()
    repos: dict = {}
    for name in names:
        repo, tag = name.rsplit(":", 1)
        repos.setdefault(repo, {})[tag] = gen.digest(config)[7:]
    blobs = {_blob(b) for b in (layer, config, manifest)}
    return write_zst(tarfile_archive([
        LAYOUT, ("index.json", index), ("manifest.json", docker),
        ("repositories", json.dumps(repos).encode()), *sorted(blobs)]), path)


def test_singular_counts(tmp_path):
    run = bundler("verify", str(_small_bundle(tmp_path / BUNDLE)))
    assert run.code == 0, run
    assert ": 1 image, 3 blobs, " in run.stdout


@pytest.mark.parametrize(("twist", "fragment"), [
    # what containerd 1.6 refuses or reads otherwise, found by an attacker's review
    (dict(names=("docker.io/rancher/x:1", "docker.io/rancher/x:1")),
     "docker.io/rancher/x:1 is named by an earlier entry too"),
    (dict(manifest_extra={"mediaType": "application/vnd.oci.image.index.v1+json"}),
     "manifest says mediaType application/vnd.oci.image.index.v1+json"),
    (dict(manifest_extra={"manifests": []}), "has an index's or schema 1's fields"),
    (dict(layer=gzip.compress(tarfile_archive([("a", b"b")]), mtime=0)), "but the blob is gzip"),
    (dict(layer_type="application/vnd.oci.image.layer.v1.tar+gzip"), "but the blob is plain"),
    (dict(layer_type="application/x-mystery"), "is not a layer type containerd unpacks"),
    (dict(layer=b"not a tar at all" * 40), "not a tar archive"),
    (dict(config_extra={"created": "yesterday"}), "created is not an RFC 3339 time"),
    (dict(config_extra={"created": "2024-02-30T00:00:00Z"}), "created is not an RFC 3339"),
    (dict(config_extra={"config": ["Env"]}), "config is not an object"),
    (dict(manifest_extra={"annotations": {"a": 1}}), "annotations is not an object of str"),
    (dict(entry_extra={"annotations": {"io.containerd.image.name": "docker.io/rancher/x:1",
                                       "n": 5}}), "annotations is not an object of strings"),
])
def test_what_containerd_reads_otherwise_is_refused(tmp_path, twist, fragment):
    report = verify(_small_bundle(tmp_path / BUNDLE, **twist))
    assert not report.ok
    assert any(fragment in p for p in report.problems), report.problems


def _with_checksum(header: bytes, value: int) -> bytes:
    return header[:148] + b"%06o\0 " % value + header[156:]


def test_a_layer_header_summed_as_signed_bytes_is_a_tar(tmp_path):
    """Go's archive/tar (containerd) takes a header whose checksum is the sum of its bytes
    read as unsigned or as signed chars (old tars wrote the latter): both are a tar; a
    checksum that is neither sum is not."""
    tar = tarfile_archive([("etc/hostname", b"x\n")])
    header = tar[:265] + b"\xe9" * 8 + tar[273:512]  # a user name with high bytes
    blank = header[:148] + b" " * 8 + header[156:]
    unsigned = sum(blank)
    signed = unsigned - 256 * sum(1 for c in blank if c > 127)
    assert signed != unsigned
    for value, fragment in ((unsigned, None), (signed, None), (unsigned + 1, "not a tar")):
        layer = _with_checksum(header, value) + tar[512:]
        report = verify(_small_bundle(tmp_path / f"{value}" / BUNDLE, layer=layer))
        if fragment is None:
            assert report.ok, report.problems
        else:
            assert any(fragment in p for p in report.problems), report.problems


SKIPPABLE = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"skip"


def test_a_zstd_layer_that_starts_with_a_skippable_frame_is_zstd(tmp_path):
    """containerd takes a skippable frame's magic for zstd and decompresses the layer: so must
    verify, or it checks the diff_id against the compressed bytes."""
    tar = tarfile_archive([("etc/hostname", b"x\n")])
    layer = SKIPPABLE + zstandard.ZstdCompressor().compress(tar)
    zstd_type = "application/vnd.oci.image.layer.v1.tar+zstd"
    good = _small_bundle(tmp_path / "good" / BUNDLE, layer=layer, layer_type=zstd_type,
                         diff_id=gen.digest(tar))
    assert verify(good).ok, verify(good).problems
    # a config that names the compressed bytes as the diff_id: containerd would fail to unpack
    bad = _small_bundle(tmp_path / "bad" / BUNDLE, layer=layer, layer_type=zstd_type,
                        diff_id=gen.digest(layer))
    assert any("diff_id mismatch" in p for p in verify(bad).problems)


def test_frames_past_what_bundler_writes_are_refused_before_walking_them_all(tmp_path):
    """8-byte skippable frames cost nothing to write: a million of them once took verify
    seconds to walk. One frame per member run, plus metadata and end marker, is the most."""
    limit = verify_module.MAX_MEMBERS + 2
    empty = b"\x50\x2a\x4d\x18" + bytes(4)  # a skippable frame with no content
    path = _small_bundle(tmp_path / BUNDLE)  # one data frame
    data = path.read_bytes()
    path.write_bytes(data + empty * (limit - 1))
    assert verify(path).ok, verify(path).problems
    path.write_bytes(data + empty * limit)
    report = verify(path)
    assert report.problems == [f"zstd: more than {limit} frames (skippable ones counted); "
                               "not a bundle bundler wrote"]


@pytest.mark.parametrize(("key", "value", "go_reads"), [
    ("size", "9" * 5000, False),  # past int64: Go's ParseInt says range
    ("size", "0" * 5000 + "2", True),  # leading zeros: Go reads 2
    ("uid", "-" + "1" * 4400, False),
    ("mtime", "1" * 4400 + ".5", False),
])
def test_pax_numbers_of_thousands_of_digits_are_refused_in_one_line(tmp_path, key, value,
                                                                    go_reads):
    """verify's reader refuses them (stricter than Go about leading zeros); the Go model
    (tarcraft), against which tarstream is held, decides them too rather than crashing on
    Python's 4300-digit limit for int()."""
    tar = member(*LAYOUT) + pax(record(key, value)) + member("index.json", b"{}") + END
    try:
        go_read(tar)
        go_ok = True
    except GoError:
        go_ok = False
    assert go_ok == go_reads
    report = verify(write_zst(tar, tmp_path / BUNDLE))
    assert not report.ok
    assert any("pax header at byte 1024" in p for p in report.problems), report.problems
    assert all("\n" not in p and len(p) < 400 for p in report.problems), report.problems


def test_a_gzip_layer_go_refuses_is_refused(tmp_path):
    tar = tarfile_archive([("etc/hostname", b"x\n")])
    padded = gzip.compress(tar, mtime=0) + bytes(16)  # Python skips the zeros; Go refuses
    report = verify(_small_bundle(tmp_path / BUNDLE, layer=padded, layer_type=(
        "application/vnd.oci.image.layer.v1.tar+gzip"), diff_id=gen.digest(tar)))
    assert any("not another member" in p for p in report.problems), report.problems


def test_control_characters_from_a_bundle_never_reach_the_terminal(tmp_path):
    evil = "\x1b[2J\x1b[HOK fake.tar.zst: 3 images\x1b[8m"
    path = _small_bundle(tmp_path / BUNDLE, entry_extra={"digest": evil})
    run = bundler("verify", str(path))
    assert run.code == 1
    assert "\x1b" not in run.stdout + run.stderr
    assert "FAILED" in run.stdout


def test_a_checksum_manifest_with_a_list_for_a_digest_is_a_problem(tmp_path):
    path = _small_bundle(tmp_path / BUNDLE, entry_extra={"digest": ["x"]})
    (tmp_path / f"{STEM}.manifest.json").write_text(json.dumps({
        "schemaVersion": 1, "bundle": {}, "images": [
            {"reference": "docker.io/rancher/x:1", "manifestDigest": ["x"]}]}))
    run = bundler("verify", str(path))
    assert run.code == 1 and "Traceback" not in run.stderr, run


@pytest.mark.parametrize("arg", [".", "/", ""])
def test_paths_without_a_file_name_are_one_line(arg, tmp_path):
    run = bundler("verify", arg, cwd=tmp_path)
    assert_one_line_error(run)
    assert run.code == 2


@pytest.mark.parametrize("name", ["blobs//sha256/" + "a" * 64, "blobs/./sha256/" + "a" * 64,
                                  "././index.json", "blobs/sha256/../sha256/" + "a" * 64])
def test_names_containerd_would_clean_are_refused(builds, tmp_path, name):
    members = files(plain_tar(builds["p1"] / BUNDLE)) + [(name, b"{}")]
    report = verify(write_zst(tarfile_archive(members), tmp_path / BUNDLE))
    assert any(f"member {name!r}" in p and ("not a clean path" in p or "climbs out" in p)
               for p in report.problems), report.problems
