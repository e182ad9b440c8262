"""End to end: build from a real registry, import into a real containerd as K3s does."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from bundler.bundleformat import compress
from tests import bundlefiles
from tests.cli_helpers import (
    assert_one_line_error,
    build_args,
    bundler,
    read_manifest,
    small_disk,
)
from tests.conftest import REFS, STEM

FULL = ["docker.io/rancher/multilist:v1", "docker.io/rancher/ociindex:v1",
        "docker.io/library/busybox:1.36.1"]


def test_outputs_and_checksums(builds):
    dist = builds["p1"]
    names = sorted(p.name for p in dist.iterdir())
    assert names == sorted([f"{STEM}.tar.zst", f"{STEM}.txt", f"{STEM}.manifest.json",
                            "sha256sum-amd64.txt"])
    assert (dist / f"{STEM}.txt").read_text() == "".join(f"{r}\n" for r in FULL)
    check = subprocess.run(["sha256sum", "-c", "sha256sum-amd64.txt"], cwd=dist,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == 2
    manifest = read_manifest(dist)
    bundle = dist / f"{STEM}.tar.zst"
    assert manifest["bundle"] == {"file": bundle.name, "size": bundle.stat().st_size,
                                  "sha256": hashlib.sha256(bundle.read_bytes()).hexdigest()}
    assert manifest["compression"] == {"format": "zstd", "level": 16, "windowLog": 25}


def test_manifest_records_upstream_digests(builds, fixture_registry):
    manifest = read_manifest(builds["p1"])
    assert [i["reference"] for i in manifest["images"]] == FULL
    for entry in manifest["images"]:
        img = fixture_registry.images[entry["reference"]]
        assert entry["manifestDigest"] == img.digest
        assert entry["indexDigest"] == fixture_registry.index_digests[entry["reference"]]
        assert entry["platform"] == "linux/amd64"
        assert [layer["diffID"] for layer in entry["layers"]] == img.diff_ids
        assert [layer["digest"] for layer in entry["layers"]] == [
            "sha256:" + hashlib.sha256(b).hexdigest() for b, _ in img.layers]


def test_byte_identical_rebuild(builds):
    for name in (f"{STEM}.tar.zst", f"{STEM}.manifest.json", "sha256sum-amd64.txt"):
        assert (builds["p1"] / name).read_bytes() == (builds["p2"] / name).read_bytes(), name


@pytest.mark.parametrize("build", ["p1", "u1"])
def test_tar_layout_is_deterministic_and_metadata_first(builds, build):
    members = bundlefiles.members(bundlefiles.plain_tar(builds[build] / f"{STEM}.tar.zst"))
    names = [m.name for m in members]
    assert names[:6] == ["oci-layout", "index.json", "manifest.json", "repositories", "blobs",
                         "blobs/sha256"]
    blobs = names[6:]
    assert len(blobs) == len(set(blobs)) and all(n.startswith("blobs/sha256/") for n in blobs)
    # Layers first, then configs and manifests, each run sorted by digest.
    layers = {"blobs/sha256/" + x["digest"].split(":")[1]
              for i in read_manifest(builds[build])["images"] for x in i["layers"]}
    n = len(layers)
    assert set(blobs[:n]) == layers
    assert blobs[:n] == sorted(blobs[:n]) and blobs[n:] == sorted(blobs[n:])
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() else 0o644)


def test_shared_layer_stored_once(builds, fixture_registry):
    tar = bundlefiles.plain_tar(builds["p1"] / f"{STEM}.tar.zst")
    members = [m.name for m in bundlefiles.members(tar)]
    shared = fixture_registry.images["docker.io/rancher/multilist:v1"].layers[0][0]
    assert members.count("blobs/sha256/" + hashlib.sha256(shared).hexdigest()) == 1


def test_zstd_window_within_k3s_limit(builds):
    for name in ("p1", "u1"):
        with open(builds[name] / f"{STEM}.tar.zst", "rb") as f:
            frames = list(compress.frames(f))
        assert frames and all(0 < fr.window_size <= 1 << 25 for fr in frames)


def test_uncompressed_mode_layers_are_diff_ids(builds, fixture_registry):
    manifest = read_manifest(builds["u1"])
    assert manifest["layers"] == "uncompressed"
    for entry in manifest["images"]:
        img = fixture_registry.images[entry["reference"]]
        assert [layer["digest"] for layer in entry["layers"]] == img.diff_ids
        assert entry["upstreamManifestDigest"] == img.digest
        assert entry["manifestDigest"] != img.digest
    smaller = (builds["u1"] / f"{STEM}.tar.zst").stat().st_size
    assert smaller < (builds["p1"] / f"{STEM}.tar.zst").stat().st_size


@pytest.mark.parametrize("build", ["p1", "u1"])
def test_imports_into_containerd_like_k3s(builds, build, clean_containerd, fixture_registry):
    done = clean_containerd.import_bundle(builds[build] / f"{STEM}.tar.zst")
    assert done.returncode == 0, done.stderr
    images = clean_containerd.images()
    manifest = read_manifest(builds[build])
    for entry in manifest["images"]:
        assert entry["reference"] in images, images
        got = images[entry["reference"]]
        assert got["digest"] == entry["manifestDigest"]
        assert got["platforms"] == "linux/amd64"
    # Unpacked with the native snapshotter: containerd checked every diff_id on the way.
    snaps = clean_containerd.ctr("snapshots", "--snapshotter", "native", "ls", check=True).stdout
    for entry in manifest["images"]:
        assert entry["layers"][0]["diffID"] in snaps


def test_index_and_docker_manifest_agree(builds):
    tar = bundlefiles.plain_tar(builds["p1"] / f"{STEM}.tar.zst")
    index = bundlefiles.json_member(tar, "index.json")
    docker = bundlefiles.json_member(tar, "manifest.json")
    names = {m.name for m in bundlefiles.members(tar)}
    assert [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]] == FULL
    assert [d["RepoTags"] for d in docker] == [[r] for r in FULL]
    for entry in docker:
        assert entry["Config"] in names and all(layer in names for layer in entry["Layers"])


@pytest.mark.parametrize(("ref", "fragments"), [
    ("rancher/multilist:nope", ["docker.io/rancher/multilist:nope", "not found"]),
    ("rancher/armonly:v1", ["docker.io/rancher/armonly:v1", "linux/amd64",
                            "linux/arm/v7, linux/arm64"]),
    ("rancher/wrongarch:v1", ["docker.io/rancher/wrongarch:v1", "linux/arm64"]),
    # A registry serves by-digest requests from content, so a wrong pin is simply absent.
    ("busybox:1.36.1@sha256:" + "0" * 64, ["docker.io/library/busybox:1.36.1@sha256:000",
                                           "not found"]),
])
def test_bad_image_fails_cleanly(fixture_registry, tmp_path, ref, fragments):
    run = bundler(*build_args(fixture_registry, tmp_path, ["busybox:1.36.1", ref]))
    assert_one_line_error(run, *fragments)
    assert not (tmp_path / "dist").exists()  # made by the build, removed with it


def test_bad_images_line_names_file_and_line(fixture_registry, tmp_path):
    args = build_args(fixture_registry, tmp_path, ["busybox:1.36.1", "# comment", "Bad/Name"])
    run = bundler(*args)
    assert_one_line_error(run, f"{tmp_path / 'images.txt'}:3", "Bad/Name")
    assert run.code == 2


def test_unreachable_registry(fixture_registry, tmp_path):
    from tests.servers import free_port, write_registries_yaml

    yaml = write_registries_yaml(tmp_path / "r.yaml",
                                 {"docker.io": [f"http://127.0.0.1:{free_port()}"]})
    (tmp_path / "images.txt").write_text("busybox:1.36.1\n")
    run = bundler("build", "--images", str(tmp_path / "images.txt"), "--output-dir",
                  str(tmp_path / "dist"), "--registries", str(yaml), "--no-default-endpoint")
    assert_one_line_error(run, "cannot connect", "127.0.0.1")
    assert run.code == 3
    assert not (tmp_path / "dist").exists()


def test_existing_outputs_survive_a_failed_build(fixture_registry, tmp_path):
    assert bundler(*build_args(fixture_registry, tmp_path, ["busybox:1.36.1"])).code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "dist").iterdir()}
    run = bundler(*build_args(fixture_registry, tmp_path, ["rancher/multilist:nope"]))
    assert run.code == 1
    after = {p.name: p.read_bytes() for p in (tmp_path / "dist").iterdir()}
    assert after == before


def test_json_summary_on_stdout(fixture_registry, tmp_path):
    args = [a for a in build_args(fixture_registry, tmp_path, ["busybox:1.36.1"]) if a != "--quiet"]
    run = bundler(*args, "--json")
    assert run.code == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["images"][0]["reference"] == "docker.io/library/busybox:1.36.1"
    assert sorted(Path(f).name for f in summary["files"]) == sorted(
        p.name for p in (tmp_path / "dist").iterdir())
    assert run.stderr == ""  # no TTY: no progress bars, and --json replaces the closing line


def test_ctrl_c_leaves_nothing(fixture_registry, tmp_path):
    import signal
    import sys
    import threading
    import time

    from tests.faultproxy import RegistryFront
    from tests.servers import write_registries_yaml

    stalled = threading.Event()

    def stall(h, server):
        if "/blobs/" in h.path and h.command == "GET":
            stalled.set()
            time.sleep(20)
        return False

    front = RegistryFront(fixture_registry.registry.url, fault=stall)
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]})
        (tmp_path / "images.txt").write_text("busybox:1.36.1\nrancher/multilist:v1\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bundler", "build", "--images", str(tmp_path / "images.txt"),
             "--output-dir", str(tmp_path / "dist"), "--registries", str(yaml),
             "--no-default-endpoint", "--cache-dir", str(tmp_path / "cache")],
            stderr=subprocess.PIPE, text=True)
        assert stalled.wait(30)
        time.sleep(0.3)  # the download is under way
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=15)
    finally:
        front.stop()
    assert proc.returncode == 130
    assert stderr.strip().splitlines() == ["bundler: error: interrupted"]
    assert not (tmp_path / "dist").exists()
    # The cache is intact: whatever is under a final name hashes to it (a download cut off
    # leaves at most a .partial temporary, which the next run removes).
    blobs = tmp_path / "cache" / "blobs" / "sha256"
    for entry in blobs.iterdir():
        if not entry.name.endswith(".partial"):
            assert hashlib.sha256(entry.read_bytes()).hexdigest() == entry.name
    rebuilt = bundler(*build_args(fixture_registry, tmp_path, ["busybox:1.36.1"]))
    assert rebuilt.code == 0, rebuilt.stderr
    assert not [e for e in blobs.iterdir() if e.name.endswith(".partial")]


def test_disk_full_is_one_line_and_leaves_nothing(fixture_registry, tmp_path):
    with small_disk(tmp_path / "small", "96k") as small:
        run = bundler(*build_args(fixture_registry, tmp_path, REFS, out="small/dist"))
        assert_one_line_error(run, "no space left on device", "small/dist")
        assert run.code == 3
        assert not (small / "dist").exists()


def test_failed_build_keeps_an_output_dir_that_was_there(fixture_registry, tmp_path):
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "other.txt").write_text("kept")
    run = bundler(*build_args(fixture_registry, tmp_path, ["busybox:404"], out="dist/a/b"))
    assert run.code == 1
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["other.txt"]
    run = bundler(*build_args(fixture_registry, tmp_path, ["busybox:404"]))
    assert run.code == 1
    assert [p.name for p in (tmp_path / "dist").iterdir()] == ["other.txt"]
