"""The registry client against a front that redirects blobs to another host."""

from __future__ import annotations

import pytest

from bundler.config import Credentials, Endpoint
from bundler.digest import VerifyingReader
from bundler.errors import DigestMismatch
from bundler.registry.client import Client
from tests.faultproxy import RegistryFront


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
