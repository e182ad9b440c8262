"""build --arch amd64,arm64: one bundle per architecture, from one run, all or nothing."""

from __future__ import annotations

import json
import subprocess

from tests.cli_helpers import assert_one_line_error, build_args, bundler

STEM = "k3s-airgap-images-multus"
MULTI = ["rancher/multilist:v1", "docker.io/rancher/ociindex:v1"]


def test_one_bundle_per_architecture(fixture_registry, tmp_path):
    run = bundler(*build_args(fixture_registry, tmp_path, MULTI, "--arch", "amd64,arm64",
                              "--json"))
    assert run.code == 0, run.stderr
    result = json.loads(run.stdout)
    assert [b["arch"] for b in result["bundles"]] == ["amd64", "arm64"]
    dist = tmp_path / "dist"
    for arch in ("amd64", "arm64"):
        names = {f"{STEM}-{arch}.tar.zst", f"{STEM}-{arch}.txt",
                 f"{STEM}-{arch}.manifest.json", f"sha256sum-{arch}.txt"}
        assert names <= {p.name for p in dist.iterdir()}
        check = subprocess.run(["sha256sum", "-c", f"sha256sum-{arch}.txt"], cwd=dist,
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
        doc = json.loads((dist / f"{STEM}-{arch}.manifest.json").read_text())
        assert {i["platform"].split("/")[1] for i in doc["images"]} == {arch}
        # each bundle is whole and of its architecture, as verify checks it
        verified = bundler("verify", str(dist / f"{STEM}-{arch}.tar.zst"))
        assert verified.code == 0, verified.stdout
    amd = json.loads((dist / f"{STEM}-amd64.manifest.json").read_text())["images"]
    arm = json.loads((dist / f"{STEM}-arm64.manifest.json").read_text())["images"]
    for a, b in zip(amd, arm, strict=True):
        assert a["indexDigest"] == b["indexDigest"]  # the same index, another platform
        assert a["manifestDigest"] != b["manifestDigest"]


def test_same_as_building_each_architecture_alone(fixture_registry, tmp_path):
    both = tmp_path / "both"
    both.mkdir()
    assert bundler(*build_args(fixture_registry, both, MULTI, "--arch", "amd64,arm64")).code == 0
    for arch in ("amd64", "arm64"):
        alone = tmp_path / arch
        alone.mkdir()
        assert bundler(*build_args(fixture_registry, alone, MULTI, "--arch", arch)).code == 0
        for name in (f"{STEM}-{arch}.tar.zst", f"{STEM}-{arch}.manifest.json",
                     f"sha256sum-{arch}.txt"):
            assert (both / "dist" / name).read_bytes() == (alone / "dist" / name).read_bytes()


def test_a_missing_platform_names_every_image_and_writes_nothing(fixture_registry, tmp_path):
    refs = [*MULTI, "busybox:1.36.1", "rancher/armonly:v1"]
    run = bundler(*build_args(fixture_registry, tmp_path, refs, "--arch", "amd64,arm64"))
    # busybox has no arm64, armonly no amd64: both named, each with its architecture
    assert_one_line_error(run, "amd64: ", "rancher/armonly:v1", "arm64: ",
                          "library/busybox:1.36.1")
    assert run.code == 1
    assert not (tmp_path / "dist").exists()


def test_an_architecture_twice_or_unknown_is_refused(fixture_registry, tmp_path):
    for arch, fragment in (("amd64,amd64", "names one twice"),
                           ("amd64,bogus", "unknown architecture 'bogus'")):
        run = bundler(*build_args(fixture_registry, tmp_path, MULTI, "--arch", arch))
        assert_one_line_error(run, "--arch", fragment)
        assert run.code == 2
