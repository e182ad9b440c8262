"""registry/api.py: the blob, manifest and tag operations and the copy steps over them, against
a real registry behind a front that records every request."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import requests

from bundler.errors import DigestMismatch, InputError, RegistryError
from bundler.reference import parse
from bundler.registry.api import Blob, Manifest, Name, RegistryAPI, names, needed
from bundler.registry.endpoint import Endpoint
from tests.registries import Front
from tests.servers import Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Image:
    """One tiny OCI image: a config, one layer, its manifest."""

    def __init__(self, seed: str):
        self.layer = f"layer {seed}".encode()
        self.config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": [_digest(self.layer)]}}).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": _digest(self.config), "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": _digest(self.layer), "size": len(self.layer)}]}).encode()
        self.digest = _digest(self.manifest)
        self.bytes = {_digest(self.layer): self.layer, _digest(self.config): self.config}

    def blobs(self) -> list[tuple[str, int]]:
        return [(d, len(b)) for d, b in self.bytes.items()]


@pytest.fixture
def front(tmp_path):
    registry = Registry(tmp_path / "reg").start()
    f = Front(registry.url)
    yield f
    f.stop()
    registry.stop()


def test_needed_names_each_blob_once_with_every_repository_in_the_order_first_named():
    got = needed([("a/x", [("sha256:1", 10), ("sha256:2", 20)]),
                  ("b/y", [("sha256:3", 30), ("sha256:1", 10)]),
                  ("a/x", [("sha256:2", 20)])])
    assert got == [Blob("sha256:1", 10, ("a/x", "b/y")), Blob("sha256:2", 20, ("a/x",)),
                   Blob("sha256:3", 30, ("b/y",))]


def test_a_name_is_the_tag_or_else_the_digest():
    pinned = parse("quay.io/a/b@sha256:" + "e" * 64)
    got = names([("m/rancher/x", parse("rancher/x:v1"), "sha256:1"),
                 ("m/a/b", pinned, "sha256:2")])
    assert got == [Name("m/rancher/x", "v1", "sha256:1",
                        "docker.io/rancher/x:v1: tag m/rancher/x:v1"),
                   Name("m/a/b", "sha256:2", "sha256:2",
                        f"{pinned}: manifest sha256:2 in m/a/b")]


def test_blob_operations_and_what_they_count(front):
    api = RegistryAPI(Endpoint(f"http://{front.host}"), jobs=1)
    layer = b"some layer"
    d = _digest(layer)
    assert not api.blob_exists("a/x", d, "blob")
    api.blob_put("a/x", d, len(layer), lambda: io.BytesIO(layer), "blob")
    assert api.blob_exists("a/x", d, "blob")
    assert api.blob_mount("b/y", d, "a/x", "blob")
    assert (api.uploads, api.mounts) == (1, 1)
    assert requests.get(f"http://{front.host}/v2/b/y/blobs/{d}", timeout=10).content == layer


def test_a_copy_uploads_each_blob_once_mounts_the_rest_and_tags_last(front):
    one, two = _Image("one"), _Image("two")
    images = [("a/img", parse("a/img:v1"), one), ("b/img", parse("b/img:v1"), one),
              ("b/img", parse("b/img:v2"), two)]
    api = RegistryAPI(Endpoint(f"http://{front.host}"), jobs=3)
    blobs = needed((repo, image.blobs()) for repo, _, image in images)
    wanted = names((repo, ref, image.digest) for repo, ref, image in images)
    missing, unnamed = api.survey(blobs, wanted)
    assert missing == blobs and unnamed == wanted
    for blob in missing:
        data = {**one.bytes, **two.bytes}[blob.digest]
        api.put_blob(blob, lambda data=data: io.BytesIO(data))
    # one's layer and config into a/img, mounted into b/img; two's uploaded into b/img.
    assert (api.uploads, api.mounts) == (4, 2)
    before = len(front.calls)
    api.put_manifests([Manifest(repo, image.digest, image.manifest, OCI_MANIFEST, ref)
                       for repo, ref, image in images], unnamed)
    puts = [p for m, p, s in front.calls[before:] if m == "PUT" and s == 201]
    by_digest = [p for p in puts if "/manifests/sha256:" in p]
    assert sorted(by_digest) == sorted({f"/v2/{repo}/manifests/{image.digest}"
                                        for repo, _, image in images})
    assert puts[:len(by_digest)] == by_digest  # no tag before every manifest is there
    assert sorted(puts[len(by_digest):]) == ["/v2/a/img/manifests/v1", "/v2/b/img/manifests/v1",
                                             "/v2/b/img/manifests/v2"]
    # Done: a fresh client (no memory of this one) finds nothing to send.
    again = RegistryAPI(Endpoint(f"http://{front.host}"))
    assert again.survey(blobs, wanted) == ([], [])


def test_a_tag_naming_another_manifest_is_unnamed_and_only_it_is_put(front):
    one, two = _Image("one"), _Image("two")
    api = RegistryAPI(Endpoint(f"http://{front.host}"), jobs=2)
    ref = parse("a/img:v1")
    for image in (one, two):
        for blob in needed([("a/img", image.blobs())]):
            api.put_blob(blob, lambda data=image.bytes[blob.digest]: io.BytesIO(data))
    api.put_manifests([Manifest("a/img", one.digest, one.manifest, OCI_MANIFEST, ref)],
                      names([("a/img", ref, one.digest)]))
    wanted = names([("a/img", ref, two.digest)])
    assert api.survey([], wanted) == ([], wanted)
    before = len(front.calls)
    api.put_manifests([Manifest("a/img", two.digest, two.manifest, OCI_MANIFEST, ref)], wanted)
    assert [(m, p) for m, p, _ in front.calls[before:]] == [
        ("PUT", f"/v2/a/img/manifests/{two.digest}"), ("PUT", "/v2/a/img/manifests/v1")]
    assert api.survey([], wanted) == ([], [])


def test_jobs_below_one_are_refused():
    with pytest.raises(InputError, match=r"^--jobs 0: want at least 1$"):
        RegistryAPI(Endpoint("http://127.0.0.1:1"), jobs=0)


def _index(*images: _Image) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": i.digest, "size": len(i.manifest),
         "platform": {"architecture": "amd64", "os": "linux"}} for i in images]}).encode()


def _pushed(api: RegistryAPI, repo: str, ref, *images: _Image) -> None:
    for image in images:
        for blob in needed([(repo, image.blobs())]):
            api.put_blob(blob, lambda data=image.bytes[blob.digest]: io.BytesIO(data))


def test_an_index_goes_after_its_manifests_and_the_tag_after_it(front):
    one, two = _Image("one"), _Image("two")
    api = RegistryAPI(Endpoint(f"http://{front.host}"), jobs=4)
    ref = parse("a/img:v1")
    _pushed(api, "a/img", ref, one, two)
    body = _index(one, two)
    index = Manifest("a/img", _digest(body), body, OCI_INDEX, ref)
    wanted = [Name("a/img", d, d, "m") for d in (one.digest, two.digest)] + \
        [Name("a/img", "v1", index.digest, "tag")]
    before = len(front.calls)
    api.put_manifests([index] + [Manifest("a/img", i.digest, i.manifest, OCI_MANIFEST, ref)
                                 for i in (one, two)], wanted)
    puts = [p for m, p, s in front.calls[before:] if m == "PUT" and s == 201]
    assert sorted(puts[:2]) == sorted(f"/v2/a/img/manifests/{i.digest}" for i in (one, two))
    assert puts[2:] == [f"/v2/a/img/manifests/{index.digest}", "/v2/a/img/manifests/v1"]


def test_manifest_get_reads_what_a_tag_names_bounded_and_none_when_absent(front, monkeypatch):
    one = _Image("one")
    api = RegistryAPI(Endpoint(f"http://{front.host}"), jobs=1)
    ref = parse("a/img:v1")
    _pushed(api, "a/img", ref, one)
    assert api.manifest_get("a/img", "v1", "tag a/img:v1") is None
    api.put_manifests([Manifest("a/img", one.digest, one.manifest, OCI_MANIFEST, ref)],
                      names([("a/img", ref, one.digest)]))
    assert api.manifest_get("a/img", "v1", "tag") == (one.manifest, OCI_MANIFEST, one.digest)
    body = _index(one)
    api.manifest_put(Manifest("a/img", _digest(body), body, OCI_INDEX, ref), "index")
    api.tag(Manifest("a/img", _digest(body), body, OCI_INDEX, ref), "v2", "index tag")
    assert api.manifest_get("a/img", "v2", "tag") == (body, OCI_INDEX, _digest(body))
    monkeypatch.setattr("bundler.registry.client.MAX_MANIFEST", len(body) - 1)
    with pytest.raises(RegistryError, match=rf"^tag a/img:v2: larger than {len(body) - 1} "):
        api.manifest_get("a/img", "v2", "tag a/img:v2")


def test_a_document_is_read_whole_checked_and_capped(front):
    one = _Image("one")
    api = RegistryAPI(Endpoint(f"http://{front.host}"), jobs=1)
    _pushed(api, "a/img", parse("a/img:v1"), one)
    config = _digest(one.config)
    assert api.document("a/img", config, len(one.config), "config") == one.config
    with pytest.raises(DigestMismatch, match=r"^config: expected 3 bytes of "):
        api.document("a/img", config, 3, "config")  # the registry sends more: refused
    before = len(front.calls)
    with pytest.raises(RegistryError, match=r"^config: 10 bytes, larger than 9; refused$"):
        api.document("a/img", config, 10, "config", cap=9)
    assert len(front.calls) == before  # refused before asking
