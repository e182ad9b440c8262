"""mutate: images from the fixture registry in the two layer forms, staged by a Stage in a
real blob store; the rewritten manifest describes exactly the staged plain layers."""

from __future__ import annotations

import json

import pytest

from bundler import mediatypes, mutate, platform, reference, sources
from bundler.cache import BlobStore
from bundler.image import parse_manifest
from bundler.stage import Stage, layer_what
from tests import imagegen as gen

AMD64 = platform.for_arch("amd64")


@pytest.fixture
def source(fixture_registry, tmp_path):
    yaml = fixture_registry.registries_yaml(tmp_path)
    return sources.from_options("registry", registries=str(yaml),
                                default_endpoint=False)(AMD64, BlobStore(tmp_path / "meta"))


def _read(opener) -> bytes:
    reader = opener()
    try:
        return reader.read()
    finally:
        reader.close()


@pytest.mark.parametrize("name", ["docker.io/rancher/multilist:v1",
                                  "docker.io/rancher/ociindex:v1"])
def test_preserve_keeps_the_manifest_and_the_blobs(fixture_registry, source, tmp_path, name):
    image = source.image(reference.parse(name))
    with Stage([image], BlobStore(tmp_path / "blobs"), layers=mutate.PRESERVE) as stage:
        staged = stage.images()[0]
        assert staged.manifest == image.manifest == fixture_registry.images[name].manifest
        assert [x.descriptor for x in staged.layers] == [x.descriptor for x in image.layers]
        for layer, (blob, _) in zip(staged.layers, fixture_registry.images[name].layers,
                                    strict=True):
            assert _read(layer.open) == blob


@pytest.mark.parametrize("name", ["docker.io/rancher/multilist:v1",
                                  "docker.io/rancher/ociindex:v1"])
def test_uncompressed_rewrites_the_manifest_to_the_plain_layers(fixture_registry, source,
                                                                tmp_path, name):
    image = source.image(reference.parse(name))
    with Stage([image], BlobStore(tmp_path / "blobs"), layers=mutate.UNCOMPRESSED) as stage:
        staged = stage.images()[0]
        config, layers = parse_manifest(staged.manifest, name)
        assert config == image.config_descriptor and staged.config == image.config
        plain_type = mediatypes.uncompressed_layer(image.manifest_media_type)
        made = fixture_registry.images[name]
        for got, layer, diff_id in zip(layers, staged.layers, made.diff_ids, strict=True):
            data = _read(layer.open)
            assert got == layer.descriptor
            assert (got.media_type, got.digest, got.size) == (plain_type, diff_id, len(data))
            assert gen.digest(data) == diff_id == layer.diff_id
    before, after = json.loads(image.manifest), json.loads(staged.manifest)
    assert {k: v for k, v in after.items() if k != "layers"} == \
        {k: v for k, v in before.items() if k != "layers"}


def test_foreign_layer_urls_are_dropped_with_the_compressed_blob(tmp_path):
    """urls point at the compressed blob; the rewritten layer is ours, and nowhere else."""
    made = gen.image([gen.tar_layer(gen.random_files(1, 1, 500))])
    doc = json.loads(made.manifest)
    doc["layers"][0]["urls"] = ["https://example.invalid/layer.tar.gz"]
    doc["layers"][0]["annotations"] = {"kept": "yes"}
    made.manifest = json.dumps(doc).encode()
    with Stage([gen.model(made, "busybox:1")], BlobStore(tmp_path / "blobs"),
               layers=mutate.UNCOMPRESSED) as stage:
        staged = stage.images()[0]
    layer = json.loads(staged.manifest)["layers"][0]
    assert "urls" not in layer and layer["annotations"] == {"kept": "yes"}


def test_layer_what_names_the_image_the_layer_and_its_digest():
    image = gen.model(gen.image([gen.tar_layer(gen.random_files(1, 1, 50))] * 2), "busybox:1")
    assert layer_what(image, 1) == \
        f"docker.io/library/busybox:1: layer 1 ({image.layers[1].descriptor.digest})"

