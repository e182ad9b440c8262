"""--source docker against a real dockerd: same bundle format, same diff_ids as the registry."""

from __future__ import annotations

import pytest

from tests.cli_helpers import assert_one_line_error, bundler, docker_build, read_manifest
from tests.conftest import BUNDLE, STEM

REFS = ["rancher/multilist:v1", "busybox:1.36.1"]
LOCAL = "docker.io/local/only:v1"  # tagged in the daemon, in no registry


@pytest.fixture(scope="module")
def daemon(dockerd):
    import docker

    client = docker.DockerClient(base_url=dockerd.host)
    for ref in REFS:
        repo, tag = ("docker.io/" + ref if "/" in ref else "docker.io/library/" + ref).split(":")
        client.images.pull(repo, tag=tag, platform="linux/amd64")
    client.images.get("docker.io/library/busybox:1.36.1").tag("docker.io/local/only", "v1")
    return dockerd


@pytest.fixture(scope="module")
def docker_builds(daemon, tmp_path_factory):
    out = {}
    for name in ("d1", "d2"):
        tmp = tmp_path_factory.mktemp(name)
        run = docker_build(daemon.host, tmp, [*REFS, LOCAL], "--pull", "never")
        assert run.code == 0, run.stderr
        out[name] = tmp / "dist"
    return out


def test_same_daemon_state_gives_identical_bundles(docker_builds):
    for name in (BUNDLE, f"{STEM}.manifest.json"):
        first, second = docker_builds["d1"] / name, docker_builds["d2"] / name
        assert first.read_bytes() == second.read_bytes()


def test_diff_ids_match_a_registry_build(docker_builds, builds, fixture_registry):
    ours = {i["reference"]: i for i in read_manifest(docker_builds["d1"])["images"]}
    registry = {i["reference"]: i for i in read_manifest(builds["u1"])["images"]}
    manifest = read_manifest(docker_builds["d1"])
    assert manifest["layers"] == "uncompressed"
    for ref in ("docker.io/rancher/multilist:v1", "docker.io/library/busybox:1.36.1"):
        assert [x["diffID"] for x in ours[ref]["layers"]] == \
            [x["diffID"] for x in registry[ref]["layers"]]
        assert [x["digest"] for x in ours[ref]["layers"]] == \
            fixture_registry.images[ref].diff_ids
    # The daemon's RepoDigests: what it pulled (the manifest list, for a multi-arch image).
    assert ours["docker.io/rancher/multilist:v1"]["upstreamManifestDigest"] == \
        fixture_registry.index_digests["docker.io/rancher/multilist:v1"]
    assert ours[LOCAL]["upstreamManifestDigest"] == ours[LOCAL]["manifestDigest"]


def test_docker_bundle_verifies_and_imports(docker_builds, clean_containerd):
    run = bundler("verify", str(docker_builds["d1"] / BUNDLE))
    assert run.code == 0, run.stdout
    done = clean_containerd.import_bundle(docker_builds["d1"] / BUNDLE)
    assert done.returncode == 0, done.stderr
    images = clean_containerd.images()
    for entry in read_manifest(docker_builds["d1"])["images"]:
        assert images[entry["reference"]]["digest"] == entry["manifestDigest"]


def test_missing_with_pull_never(daemon, tmp_path):
    run = docker_build(daemon.host, tmp_path, ["docker.io/rancher/ociindex:v1"], "--pull",
                       "never")
    assert_one_line_error(run, "docker.io/rancher/ociindex:v1", "not in the Docker daemon")
    assert run.code == 1 and not (tmp_path / "dist").exists()


def test_pull_missing_through_the_daemon(daemon, tmp_path, fixture_registry):
    run = docker_build(daemon.host, tmp_path, ["docker.io/rancher/big:v1"])
    assert run.code == 0, run.stderr
    entry = read_manifest(tmp_path / "dist")["images"][0]
    assert entry["platform"] == "linux/amd64"
    assert [x["diffID"] for x in entry["layers"]] == \
        fixture_registry.images["docker.io/rancher/big:v1"].diff_ids


def test_failed_daemon_pull_is_one_line(daemon, tmp_path):
    # Docker 20.10 cannot pull this OCI index (zstd layer, attestation) through its mirror.
    run = docker_build(daemon.host, tmp_path, ["docker.io/rancher/ociindex:v1"])
    if run.code == 0:
        pytest.skip("this daemon pulls the OCI index fine")
    assert_one_line_error(run, "docker.io/rancher/ociindex:v1")


def test_wrong_platform_is_refused(daemon, tmp_path):
    run = docker_build(daemon.host, tmp_path, ["docker.io/rancher/wrongarch:v1"])
    assert_one_line_error(run, "docker.io/rancher/wrongarch:v1")
    assert run.code == 1


def test_unreachable_daemon(tmp_path):
    images = tmp_path / "images.txt"
    images.write_text("busybox:1.36.1\n")
    run = bundler("build", "--source", "docker", "--images", str(images), "--output-dir",
                  str(tmp_path / "dist"), env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert_one_line_error(run, "cannot reach the Docker daemon")
    assert run.code == 3


def test_preserve_is_refused_with_docker(tmp_path):
    run = bundler("build", "--source", "docker", "--layers", "preserve", "--images",
                  str(tmp_path / "x.txt"))
    assert_one_line_error(run, "--layers preserve needs --source registry")
    assert run.code == 2
