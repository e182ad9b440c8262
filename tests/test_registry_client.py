"""The registry client against a front that redirects blobs to another host."""

from __future__ import annotations

import pytest

from bundler.digest import VerifyingReader
from bundler.errors import DigestMismatch
from bundler.registry.client import Client
from bundler.registry.endpoint import Credentials, Endpoint
from tests.cli_helpers import assert_one_line_error, build_args, bundler
from tests.faultproxy import RegistryFront
from tests.servers import write_registries_yaml


@pytest.fixture
def front(fixture_registry):
    f = RegistryFront(fixture_registry.registry.url, username="u", password="p",
                      redirect_blobs=True)
    yield f
    f.stop()


def test_authorization_never_follows_a_redirect_to_another_host(front, fixture_registry):
    img = fixture_registry.images["docker.io/library/busybox:1.36.1"]
    client = Client(Endpoint(front.url, credentials=Credentials("u", "p")))
    body, media_type, digest = client.manifest("library/busybox", "1.36.1", "busybox")
    assert digest == img.digest and media_type == img.media_type
    blob, _ = img.layers[0]
    reader = VerifyingReader(client.blob("library/busybox", "sha256:" + _hex(blob), "layer"),
                             "sha256:" + _hex(blob), len(blob), "layer")
    data = b"".join(iter(lambda: reader.read(), b""))
    assert data == blob
    storage = [r for r in front.requests if r[0] == "storage"]
    assert storage, "the blob was not fetched through the redirect"
    assert all(auth == "" for _, _, auth in storage)
    assert any(auth.startswith("Basic ") for server, _, auth in front.requests
               if server == "front")


def test_manifest_by_digest_is_checked(front, fixture_registry):
    # Ask by one digest while the front serves another manifest: the client must notice.
    img = fixture_registry.images["docker.io/library/busybox:1.36.1"]
    other = fixture_registry.images["docker.io/rancher/multilist:v1"]

    def swap(h, server):
        if h.path.endswith(f"/manifests/{img.digest}"):
            h.path = h.path.replace("library/busybox", "rancher/multilist").replace(
                img.digest, other.digest)
        return False

    front.fault = swap
    client = Client(Endpoint(front.url, credentials=Credentials("u", "p")))
    with pytest.raises(DigestMismatch, match="manifest digest mismatch"):
        client.manifest("library/busybox", img.digest, "busybox")


def _hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_digest_pin_of_another_repository_fails_warm_as_cold(fixture_registry, tmp_path):
    """A by-digest ref is confirmed in its own repository (one HEAD) even
    when the cache holds the manifest from another repository."""
    busybox = fixture_registry.images["docker.io/library/busybox:1.36.1"]
    pinned = f"rancher/multilist@{busybox.digest}"
    front = RegistryFront(fixture_registry.registry.url)
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]})
        cold = bundler(*build_args(None, tmp_path, [pinned], registries=yaml, out="cold"))
        warm_up = bundler(*build_args(None, tmp_path, ["busybox:1.36.1"], registries=yaml,
                                      out="warmup"))
        assert warm_up.code == 0, warm_up.stderr
        front.requests.clear()
        warm = bundler(*build_args(None, tmp_path, [pinned], registries=yaml, out="warm"))
        asked = [(r[1]) for r in front.requests]
        front.requests.clear()
        # The right repository, warm: one HEAD confirms it, the cached bytes are used.
        good = bundler(*build_args(None, tmp_path, [f"library/busybox@{busybox.digest}"],
                                   registries=yaml, out="good"))
    finally:
        front.stop()
    assert_one_line_error(cold, f"docker.io/{pinned}", "MANIFEST_UNKNOWN")
    assert (warm.code, warm.stderr) == (cold.code, cold.stderr)
    assert asked.count(f"/v2/rancher/multilist/manifests/{busybox.digest}") == 2  # HEAD, GET
    assert not (tmp_path / "warm").exists() or not list((tmp_path / "warm").iterdir())
    assert good.code == 0, good.stderr
    manifest_requests = [r for r in front.requests if "/manifests/" in r[1]]
    assert len(manifest_requests) == 1, manifest_requests


def test_an_endpoint_path_is_the_api_root_as_in_k3s(fixture_registry, tmp_path):
    """`http://mirror/prefix` is asked for `/prefix/<repository>/...` (containerd's
    override_path), as the config reads it; the front maps that prefix onto the registry."""
    def unprefix(h, server):
        if h.path.startswith("/prefix/"):
            h.path = "/v2/" + h.path[len("/prefix/"):]
        return False

    front = RegistryFront(fixture_registry.registry.url, fault=unprefix)
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [f"{front.url}/prefix"]})
        run = bundler(*build_args(None, tmp_path, ["busybox:1.36.1"], registries=yaml))
    finally:
        front.stop()
    assert run.code == 0, run.stderr
    paths = [path for _, path, _ in front.requests]
    assert "/prefix/library/busybox/manifests/1.36.1" in paths
    assert not [p for p in paths if p.startswith("/v2/") or p.startswith("/prefix/v2/")]
