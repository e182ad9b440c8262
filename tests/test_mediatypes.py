"""mediatypes: the Accept list gets every kind of document from a real registry as stored, and
the layer helpers agree with the bytes each media type labels."""

from __future__ import annotations

import pytest
import requests

from bundler import mediatypes as mt
from tests import imagegen as gen

# (repository, reference) of each kind of document the fixture registry holds.
DOCUMENTS = {
    "docker manifest list": ("rancher/multilist", "v1"),
    "oci index": ("rancher/ociindex", "v1"),
    "docker manifest": ("library/busybox", "1.36.1"),
}


def _get(fixture_registry, repo: str, ref: str) -> requests.Response:
    r = requests.get(f"{fixture_registry.registry.url}/v2/{repo}/manifests/{ref}", timeout=30,
                     headers={"Accept": ", ".join(mt.MANIFESTS)})
    r.raise_for_status()
    return r


def test_the_accept_list_is_every_kind_read():
    assert set(mt.MANIFESTS) == set(mt.INDEXES) | set(mt.IMAGE_MANIFESTS)
    assert not set(mt.INDEXES) & set(mt.IMAGE_MANIFESTS)


@pytest.mark.parametrize("kind", DOCUMENTS)
def test_the_registry_answers_the_accept_list_with_the_stored_document(fixture_registry, kind):
    """Asked with MANIFESTS, distribution converts nothing (a list it would answer with its
    amd64 manifest, an OCI index with 404): the digest is the one pushed."""
    repo, tag = DOCUMENTS[kind]
    r = _get(fixture_registry, repo, tag)
    name = f"docker.io/{repo}:{tag}"
    want = fixture_registry.index_digests[name] or fixture_registry.images[name].digest
    assert gen.digest(r.content) == r.headers["Docker-Content-Digest"] == want
    is_index = fixture_registry.index_digests[name] is not None
    assert r.headers["Content-Type"] in (mt.INDEXES if is_index else mt.IMAGE_MANIFESTS)


def test_an_oci_image_manifest_is_served_as_stored(fixture_registry):
    oci = fixture_registry.images["docker.io/rancher/ociindex:v1"]
    r = _get(fixture_registry, "rancher/ociindex", oci.digest)
    assert r.content == oci.manifest
    assert r.headers["Content-Type"] == oci.media_type in mt.IMAGE_MANIFESTS


@pytest.mark.parametrize("oci", [False, True], ids=["docker", "oci"])
def test_layer_helpers_agree_with_the_bytes_each_type_labels(oci):
    tar = gen.tar_layer(gen.random_files(1, 1, 1000))
    kinds = ["gzip", "none"] + (["zstd"] if oci else [])
    made = gen.image([tar] * len(kinds), oci=oci, compression=kinds)
    plain = {media for blob, media in made.layers if blob == tar}
    assert len(plain) == 1
    assert mt.uncompressed_layer(made.media_type) in plain
    for blob, media in made.layers:
        assert mt.is_compressed_layer(media) == (blob != tar), media
