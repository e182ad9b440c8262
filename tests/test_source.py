"""source: what the Source protocol promises, held against the real sources that need no
daemon (the registry source on the fixture registry, the bundle source on a built bundle);
and every source and sink speaks its protocol."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from bundler import platform, reference, sources
from bundler.cache import BlobStore
from bundler.errors import BundlerError, DigestMismatch
from bundler.image import Image
from bundler.sinks import Sink
from bundler.sinks.bundle import BundleSink
from bundler.sinks.registry import RegistrySink
from bundler.sources import Source
from bundler.sources.bundle import BundleSource
from bundler.sources.docker import DockerSource
from bundler.sources.registry import RegistrySource
from tests import imagegen as gen
from tests.conftest import BUNDLE, REFS
from tests.faultproxy import RegistryFront
from tests.httpreply import reply
from tests.servers import write_registries_yaml
from tests.streams import read_closed

AMD64 = platform.for_arch("amd64")
GOOD = [reference.parse(r) for r in REFS]
MISSING = [reference.parse(r) for r in ("rancher/nope:v1", "rancher/gone:v2")]


def _registry_source(url: str, tmp_path) -> RegistrySource:
    yaml = write_registries_yaml(tmp_path / "registries.yaml", {"docker.io": [url]})
    return sources.from_options("registry", registries=str(yaml), default_endpoint=False)(
        AMD64, BlobStore(tmp_path / "meta"))


@pytest.fixture(params=["registry", "bundle"])
def source(request, fixture_registry, builds, tmp_path) -> Source:
    if request.param == "registry":
        return _registry_source(fixture_registry.registry.url, tmp_path)
    return BundleSource(builds["p1"] / BUNDLE)


def _same(a: Image, b: Image) -> bool:
    return (a.reference, a.manifest, a.config, [x.descriptor for x in a.layers]) == \
        (b.reference, b.manifest, b.config, [x.descriptor for x in b.layers])


def test_every_source_and_sink_speaks_its_protocol():
    for cls in (RegistrySource, DockerSource, BundleSource):
        assert issubclass(cls, Source), cls
    for cls in (BundleSink, RegistrySink):
        assert issubclass(cls, Sink), cls


def test_images_is_image_of_each_in_order(source):
    images = source.images(GOOD)
    assert [i.reference.image_name for i in images] == [r.image_name for r in GOOD]
    for image, ref in zip(images, GOOD, strict=True):
        assert _same(image, source.image(ref))


def test_image_from_several_threads_any_number_of_times(source):
    want = {r.image_name: source.image(r) for r in GOOD}
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(source.image, GOOD * 4))
    for image in got:
        assert _same(image, want[image.reference.image_name])


def test_layers_stream_their_blobs_as_described(source, fixture_registry):
    for image in source.images(GOOD):
        for layer in image.layers:
            data = read_closed(layer.open())
            assert (gen.digest(data), len(data)) == (layer.descriptor.digest,
                                                     layer.descriptor.size)
        assert image.platform == AMD64


def test_a_failure_names_the_reference_and_images_names_every_one(source):
    for ref in MISSING:
        with pytest.raises(BundlerError) as e:
            source.image(ref)
        assert str(ref) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(BundlerError) as e:
        source.images([GOOD[0], MISSING[0], GOOD[1], MISSING[1]])
    assert all(str(ref) in str(e.value) for ref in MISSING)
    assert source.image(GOOD[0]).layers  # nothing returned before is spoiled


def test_a_blob_that_does_not_hash_to_its_digest_fails_in_read(fixture_registry, tmp_path):
    """A registry that answers a blob with other bytes of the same length: read() raises
    DigestMismatch by the end of the stream."""

    layers = {gen.digest(b) for b, _ in fixture_registry.images[GOOD[2].image_name].layers}

    def flipped(h, server):
        if h.command != "GET" or h.path.rsplit("/", 1)[-1] not in layers:
            return False
        upstream = fixture_registry.registry.url + h.path
        import requests

        body = bytearray(requests.get(upstream, timeout=30).content)
        body[len(body) // 2] ^= 1
        return reply(h, 200, bytes(body), {"Content-Type": "application/octet-stream"})

    front = RegistryFront(fixture_registry.registry.url, fault=flipped)
    try:
        image = _registry_source(front.url, tmp_path).image(GOOD[2])
        for layer in image.layers:
            with pytest.raises(DigestMismatch):
                read_closed(layer.open())
    finally:
        front.stop()
