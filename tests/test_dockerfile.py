"""The Dockerfile builds an image of bundler, with the Docker engine the tests start, and the
image runs bundler.

The test dockerd has no network and cannot pull python:3.X-slim, so the base is made from this
machine's Debian python3 (tests/baseimage.py) and pip installs from wheels put into the build
context (the Dockerfile's PIP_ARGS), as a pipeline without network would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import baseimage
from tests.conftest import BUNDLE

ROOT = Path(__file__).resolve().parent.parent
BASE = "bundler-test-base:debian-python3"
TAG = "bundler-test:latest"
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "LICENSE", "bundler")


def _context(directory: Path) -> Path:
    for name in CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, directory / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, directory / name)
    wheels = directory / "wheels"
    # bundler's dependencies, and what pip needs to build it from source (setuptools, wheel).
    for args in (["wheel", str(ROOT)], ["download", "setuptools>=64", "wheel"]):
        done = subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--no-cache-dir",
                               "--disable-pip-version-check", "-d" if args[0] == "download"
                               else "-w", str(wheels)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    return directory


@pytest.fixture(scope="module")
def image(dockerd, tmp_path_factory):
    import docker

    missing = baseimage.missing_packages()
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed; run scripts/test, which installs them")
    client = docker.DockerClient(base_url=dockerd.host, timeout=600)
    client.api.import_image_from_data(baseimage.rootfs(), repository=BASE.split(":")[0],
                                      tag=BASE.split(":")[1])
    context = _context(tmp_path_factory.mktemp("context"))
    try:
        built, _ = client.images.build(
            path=str(context), tag=TAG, network_mode="none", rm=True, forcerm=True,
            buildargs={"BASE": BASE, "PIP_ARGS": "--no-index --find-links /src/wheels"})
    except docker.errors.BuildError as e:
        log = "".join(str(x.get("stream", x)) for x in e.build_log)
        pytest.fail(f"docker build failed: {e}\n{log[-3000:]}")
    yield client, built
    client.close()


def test_image_runs_bundler_version(image):
    client, built = image
    out = client.containers.run(built.id, ["--version"], network_mode="none", remove=True)
    assert out.decode().startswith("bundler ")
    assert built.attrs["Config"]["Entrypoint"] == ["bundler"]


def test_image_verifies_a_mounted_bundle(image, builds):
    client, built = image
    out = client.containers.run(
        built.id, ["verify", f"/bundles/{BUNDLE}"], network_mode="none", remove=True,
        volumes={str(builds["p1"]): {"bind": "/bundles", "mode": "ro"}})
    assert out.decode().startswith(f"OK /bundles/{BUNDLE}: 3 images")


def test_build_context_is_only_what_pip_needs():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "LICENSE", "bundler", "wheels"}
