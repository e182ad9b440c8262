"""stage: layers from the fixture registry staged into a real blob store by the stage's
Fetcher, each downloaded once however often it is asked for; and sources.resolve's
resolve_all, its order and failures."""

from __future__ import annotations

import dataclasses
import gzip
import io
import threading
import time

import pytest

from bundler import mutate, platform, reference, sources
from bundler import stage as stage_module
from bundler.cache import BlobStore
from bundler.errors import BundlerError, DigestMismatch, NetworkError, RegistryError
from bundler.sources.resolve import ImagesFailed, resolve_all
from bundler.stage import Fetcher, Stage
from tests import imagegen as gen
from tests.faultproxy import RegistryFront
from tests.servers import write_registries_yaml

AMD64 = platform.for_arch("amd64")
OCIINDEX = "docker.io/rancher/ociindex:v1"  # a gzip layer and a zstd one
MULTILIST = "docker.io/rancher/multilist:v1"


@pytest.fixture
def front(fixture_registry):
    """The fixture registry behind a front that counts blob downloads."""
    blob_gets: list[str] = []
    lock = threading.Lock()

    def count(h, server):
        if "/blobs/" in h.path and h.command == "GET":
            with lock:
                blob_gets.append(h.path.rsplit("/", 1)[1])
        return False

    f = RegistryFront(fixture_registry.registry.url, fault=count)
    f.blob_gets = blob_gets
    yield f
    f.stop()


def _source(tmp_path, url: str):
    yaml = write_registries_yaml(tmp_path / "registries.yaml", {"docker.io": [url]})
    open_source = sources.from_options("registry", registries=str(yaml),
                                       default_endpoint=False)
    return open_source(AMD64, BlobStore(tmp_path / "meta"))


def _image(tmp_path, url: str, name: str = OCIINDEX):
    return _source(tmp_path, url).image(reference.parse(name))


def _read(reader) -> bytes:
    try:
        return reader.read()
    finally:
        reader.close()


def _plain(blob: bytes) -> bytes:
    import zstandard

    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()


@pytest.mark.parametrize("uncompressed", [False, True], ids=["as-stored", "uncompressed"])
def test_layers_are_staged_as_stored_or_uncompressed(fixture_registry, front, tmp_path,
                                                     uncompressed):
    image = _image(tmp_path, front.url)
    made = fixture_registry.images[OCIINDEX]
    store = BlobStore(tmp_path / "blobs")
    with Fetcher(store, uncompressed) as fetcher:
        for i, layer in enumerate(image.layers):
            fetcher.ensure(layer, f"layer {i}").result(timeout=60)
        for layer, (blob, _), diff_id in zip(image.layers, made.layers, made.diff_ids,
                                             strict=True):
            want = _plain(blob) if uncompressed else blob
            target = fetcher.target(layer)
            assert target == (diff_id if uncompressed else gen.digest(blob))
            assert _read(store.open(target)) == want
            assert _read(fetcher.opener(layer, "layer")()) == want


def test_each_layer_is_downloaded_once_however_often_asked(front, tmp_path):
    image = _image(tmp_path, front.url)
    front.blob_gets.clear()
    with Fetcher(BlobStore(tmp_path / "blobs"), False, jobs=4) as fetcher:
        futures = [fetcher.ensure(layer, "layer") for _ in range(5) for layer in image.layers]
        futures += [fetcher.ensure(layer, "layer", check=False) for layer in image.layers]
        for future in futures:
            future.result(timeout=60)
        _read(fetcher.opener(image.layers[0], "layer")())
    assert sorted(front.blob_gets) == sorted(x.descriptor.digest for x in image.layers)


def test_a_stored_layer_is_checked_and_fetched_again_only_if_bad(front, tmp_path):
    image = _image(tmp_path, front.url)
    store = BlobStore(tmp_path / "blobs")
    with Fetcher(store, False) as fetcher:
        for layer in image.layers:
            fetcher.ensure(layer, "layer").result(timeout=60)
    good, bad = image.layers
    damaged = store.path(bad.descriptor.digest)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 1
    damaged.chmod(0o644)
    damaged.write_bytes(bytes(data))
    front.blob_gets.clear()
    with Fetcher(store, False) as fetcher:
        for layer in image.layers:
            fetcher.ensure(layer, "layer").result(timeout=60)
    assert front.blob_gets == [bad.descriptor.digest]
    assert gen.digest(_read(store.open(bad.descriptor.digest))) == bad.descriptor.digest
    front.blob_gets.clear()
    with Fetcher(store, False) as fetcher:  # not to be read: taken as it is
        for layer in image.layers:
            fetcher.ensure(layer, "layer", check=False).result(timeout=60)
    assert front.blob_gets == []


def test_download_keeps_the_blob_as_stored(fixture_registry, front, tmp_path):
    image = _image(tmp_path, front.url)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with Fetcher(BlobStore(tmp_path / "blobs"), True, scratch=scratch) as fetcher:
        path = fetcher.download(image.layers[0], "layer").result(timeout=60)
        assert fetcher.download(image.layers[0], "layer").result(timeout=60) == path
    assert path.parent == scratch
    assert path.read_bytes() == fixture_registry.images[OCIINDEX].layers[0][0]
    assert front.blob_gets.count(image.layers[0].descriptor.digest) == 1
    with Fetcher(BlobStore(tmp_path / "blobs2"), True) as fetcher:
        with pytest.raises(ValueError):
            fetcher.download(image.layers[0], "layer").result(timeout=60)


def test_a_layer_whose_bytes_are_wrong_fails_its_waiters_and_stores_nothing(front, tmp_path):
    image = _image(tmp_path, front.url)
    layer = image.layers[0]
    opened = []

    def wrong():
        opened.append(1)
        return io.BytesIO(gzip.compress(b"not the layer", mtime=0))

    bad = dataclasses.replace(layer, open=wrong)
    store = BlobStore(tmp_path / "blobs")
    with Fetcher(store, False) as fetcher:
        with pytest.raises(DigestMismatch) as e:
            fetcher.ensure(bad, "the layer").result(timeout=60)
        with pytest.raises(DigestMismatch):
            fetcher.opener(bad, "the layer")()
    assert "the layer" in str(e.value)
    assert len(opened) == 2  # fetched once more from the start, then reported
    assert not store.has(layer.descriptor.digest)


def test_resolve_all_keeps_the_order_and_names_every_failure(front, tmp_path):
    source = _source(tmp_path, front.url)
    refs = [reference.parse(r) for r in (MULTILIST, "busybox:1.36.1", OCIINDEX)]
    images = resolve_all(source.image, refs, jobs=3)
    assert [i.reference for i in images] == refs
    missing = [reference.parse(r) for r in ("rancher/nope:v1", "rancher/gone:v2")]
    with pytest.raises(ImagesFailed) as e:
        resolve_all(source.image, [refs[0], missing[0], refs[1], missing[1]], jobs=2)
    assert [ref for ref, _ in e.value.failures] == missing
    assert all(isinstance(err, RegistryError) for _, err in e.value.failures)
    message = str(e.value)
    assert message.startswith("2 images failed: ") and "\n" not in message
    assert str(missing[0]) in message and str(missing[1]) in message
    with pytest.raises(RegistryError) as one:
        resolve_all(source.image, [refs[0], missing[0]], jobs=1)
    assert str(missing[0]) in str(one.value)


def test_several_failures_exit_with_the_worst_code_and_name_each_image():
    refs = [reference.parse(r) for r in ("a:1", "b:1", "c:1")]
    failures = {"a:1": RegistryError("not found"), "b:1": None,
                "c:1": NetworkError("docker.io/library/c:1: connection refused")}

    def resolve(ref):
        error = failures[ref.image_name.rsplit("/", 1)[1]]
        if error:
            raise error
        return ref

    with pytest.raises(ImagesFailed) as e:
        resolve_all(resolve, refs, jobs=3)
    assert e.value.exit_code == NetworkError("x").exit_code > RegistryError("x").exit_code
    assert str(e.value) == ("2 images failed: docker.io/library/a:1: not found; "
                            "docker.io/library/c:1: connection refused")


def test_an_error_that_is_no_images_fault_is_raised_alone():
    def resolve(ref):
        if ref.image_name.endswith("b:1"):
            raise MemoryError
        raise BundlerError("bad")

    with pytest.raises(MemoryError):
        resolve_all(resolve, [reference.parse("a:1"), reference.parse("b:1")], jobs=2)


def test_the_stage_pulls_only_the_layers_the_sink_reads(fixture_registry, front, tmp_path):
    # A preserve sink whose frames are cached reads no layer: the stage must not pull one
    # until it is prefetched or opened.
    image = _image(tmp_path, front.url)
    made = fixture_registry.images[OCIINDEX]
    front.blob_gets.clear()
    with Stage([image], BlobStore(tmp_path / "blobs"), layers=mutate.PRESERVE) as stage:
        staged = stage.images()[0]
        time.sleep(0.5)  # what a pull started here would have needed to show
        assert front.blob_gets == []
        first = image.layers[0].descriptor.digest
        stage.prefetch([first, "sha256:" + "0" * 64])  # a digest of no layer is passed over
        assert _read(staged.layers[0].open()) == made.layers[0][0]
        time.sleep(0.5)
    assert front.blob_gets == [first]


def test_a_compact_stage_gives_every_layer_in_tar_order_as_it_arrives(fixture_registry, front,
                                                                      tmp_path, monkeypatch):
    monkeypatch.setattr(stage_module, "STREAM_SIZE", 0)  # the gzip layers are streamed
    source = _source(tmp_path, front.url)
    images = [source.image(reference.parse(r)) for r in (MULTILIST, OCIINDEX)]
    diff_ids = [d for r in (MULTILIST, OCIINDEX) for d in fixture_registry.images[r].diff_ids]
    front.blob_gets.clear()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    store = BlobStore(tmp_path / "blobs")
    with Stage(images, store, layers=mutate.UNCOMPRESSED, scratch=scratch) as stage:
        stage.start()
        arrived = []
        for arrival in stage.arriving():
            arrived.append(arrival.digest)
            reader = arrival.open()
            data = b"".join(iter(reader.read, b""))  # to its end, as the compressor reads
            reader.close()
            assert len(data) == arrival.size and gen.digest(data) == arrival.digest
        assert arrived == sorted(set(diff_ids))  # the tar's order: each layer once
        assert all(store.verified(d) for d in diff_ids)  # the streamed ones stored too
        written = stage.images()
    assert [x.descriptor.digest for i in written for x in i.layers] == diff_ids
    # each blob downloaded once
    assert sorted(front.blob_gets) == sorted({x.descriptor.digest for i in images
                                              for x in i.layers})
