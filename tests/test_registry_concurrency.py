"""Images resolved several at a time against the real registry, sharing connections
and bearer tokens, with every failing image named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler.cache import BlobStore
from bundler.config import load_registries
from bundler.errors import EXIT_ENVIRONMENT, EXIT_FAILED, NetworkError, RegistryError
from bundler.platform import for_arch
from bundler.reference import parse
from bundler.sources.registry import RegistrySource
from bundler.sources.resolve import ImagesFailed
from tests import imagegen as gen
from tests import registries
from tests.cli_helpers import assert_one_line_error, build_args, bundler
from tests.faultproxy import RegistryFront
from tests.netshape import NetShape
from tests.registryseed import push_image
from tests.servers import Registry, free_port, write_registries_yaml

REFS = ["docker.io/rancher/multilist:v1", "docker.io/rancher/ociindex:v1",
        "docker.io/library/busybox:1.36.1", "docker.io/rancher/big:v1"]


def _source(yaml: Path, store: BlobStore | None = None, jobs: int = 4) -> RegistrySource:
    return RegistrySource(load_registries(str(yaml), False), for_arch("amd64"), 30, store,
                          jobs=jobs)


def _shape(image) -> tuple:
    return (str(image.reference), str(image.platform), image.manifest, image.manifest_media_type,
            image.config, image.index_digest,
            [(layer.descriptor, layer.diff_id) for layer in image.layers])


def test_concurrent_resolution_gives_the_sequential_images_in_order(fixture_registry, tmp_path):
    yaml = fixture_registry.registries_yaml(tmp_path)
    refs = [parse(r) for r in REFS * 2]  # a repeated reference is resolved by two threads
    sequential = [_source(yaml).image(ref) for ref in refs]
    for store in (None, BlobStore(tmp_path / "cache")):
        for _ in range(2):  # with a store: cold, then warm (HEADs only, sent concurrently)
            images = _source(yaml, store, jobs=8).images(refs)
            assert [_shape(i) for i in images] == [_shape(i) for i in sequential]
    layer = sequential[2].layers[0]
    reader = layer.open()  # layers stay lazy and readable after concurrent resolution
    try:
        assert len(b"".join(iter(reader.read, b""))) == layer.descriptor.size
    finally:
        reader.close()


def test_connections_are_kept_alive_and_shared(fixture_registry, tmp_path):
    """One connection carries every request of a sequential resolution (HEADs included: each
    closed its connection before); concurrent resolution opens at most one per thread."""
    with NetShape(fixture_registry.registry.url, delay=0) as front:
        yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]})
        pinned = fixture_registry.images["docker.io/library/busybox:1.36.1"].digest
        refs = [parse(r) for r in [*REFS, f"busybox@{pinned}"]]  # warm, a pin is one HEAD
        store = BlobStore(tmp_path / "cache")
        source = _source(yaml, store, jobs=1)
        for _ in range(2):  # cold, warm
            source.images(refs)
        # Cold: manifests (indexes, then platforms) and configs by GET; warm: a HEAD each.
        assert front.requests >= 3 * len(refs)
        assert front.connections == 1
        before = front.connections
        _source(yaml, store, jobs=3).images(refs * 3)
        assert front.connections - before <= 3


@pytest.fixture
def shaped_token_registry(tmp_path):
    """A registry behind the token server (the Docker Hub flow) holding library/busybox and
    library/other, each under the tags t0..t5; the registry's front counts connections."""
    data = tmp_path / "data"
    plain = Registry(tmp_path / "plain", data=data).start()
    try:
        for repo, seed in (("library/busybox", 21), ("library/other", 22)):
            img = gen.image([gen.tar_layer(gen.random_files(seed))])
            for n in range(6):
                push_image(plain.url, repo, img, f"t{n}")
    finally:
        plain.stop()
    with registries.token_registry(tmp_path, data) as (tokens, registry):
        front = NetShape(registry.url, delay=0.02).start()
        yield tokens, front
        front.stop()


def test_a_scope_token_is_fetched_once_by_concurrent_threads(shaped_token_registry, tmp_path):
    tokens, front = shaped_token_registry
    yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]})
    refs = [parse(f"{repo}:t{n}") for n in range(6) for repo in ("busybox", "library/other")]
    images = _source(yaml, jobs=6).images(refs)
    assert [str(i.reference) for i in images] == [str(r) for r in refs]
    scopes = sorted(r["query"]["scope"] for r in tokens.requests)
    assert scopes == ["repository:library/busybox:pull", "repository:library/other:pull"]
    # The 401 challenges were read to their end, so their connections carried the retries.
    assert front.connections <= 6


def test_a_new_repository_asks_the_realm_without_a_401_first(shaped_token_registry, tmp_path):
    """Once the endpoint's challenge said where tokens come from, a new repository's token is
    fetched before its first request: one 401 in all, not one per repository."""
    tokens, front = shaped_token_registry
    yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]})
    refs = [parse(f"{repo}:t{n}") for n in range(2) for repo in ("busybox", "library/other")]
    _source(yaml, jobs=1).images(refs)
    # Each image is a manifest and a config (no index, no store); one challenge.
    assert front.requests == 2 * len(refs) + 1
    assert len(tokens.requests) == 2


def test_every_failing_image_is_named_in_one_line(fixture_registry, tmp_path):
    yaml = fixture_registry.registries_yaml(tmp_path)
    refs = [parse(r) for r in ("rancher/missing:v1", "busybox:1.36.1", "rancher/armonly:v1",
                               "rancher/absent:v2")]
    with pytest.raises(ImagesFailed) as failed:
        _source(yaml).images(refs)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("3 images failed: docker.io/rancher/missing:v1: ")
    for name in ("docker.io/rancher/missing:v1", "docker.io/rancher/armonly:v1",
                 "docker.io/rancher/absent:v2"):
        assert name in message
    assert "busybox" not in message
    assert failed.value.exit_code == EXIT_FAILED
    # One failure is raised as it is, as before.
    with pytest.raises(RegistryError, match=r"^docker.io/rancher/missing:v1: not found"):
        _source(yaml).images(refs[:2])


def test_an_unreachable_registry_sets_the_exit_code(fixture_registry, tmp_path):
    """The worst kind wins: an environment failure (3) over a missing image (1)."""
    yaml = write_registries_yaml(tmp_path / "r.yaml", {
        "docker.io": [fixture_registry.registry.url],
        "quay.io": [f"http://127.0.0.1:{free_port()}"]})
    source = RegistrySource(load_registries(str(yaml), False), for_arch("amd64"), 2, jobs=2)
    with pytest.raises(ImagesFailed) as failed:
        source.images([parse("rancher/missing:v1"), parse("quay.io/x/y:1")])
    assert failed.value.exit_code == EXIT_ENVIRONMENT
    assert "docker.io/rancher/missing:v1: not found" in str(failed.value)
    assert "quay.io/x/y:1: " in str(failed.value) and "cannot connect" in str(failed.value)
    assert isinstance(failed.value.failures[1][1], NetworkError)


def test_build_names_every_failing_image_in_one_line(fixture_registry, tmp_path):
    run = bundler(*build_args(fixture_registry, tmp_path, [
        "rancher/missing:v1", "busybox:1.36.1", "rancher/wrongarch:v1"], "--jobs", "3"))
    assert_one_line_error(run, "2 images failed: ", "docker.io/rancher/missing:v1: not found",
                          "docker.io/rancher/wrongarch:v1: ")
    assert run.code == EXIT_FAILED
    assert not (tmp_path / "dist").exists()



def test_a_cold_build_asks_no_digest_and_a_warm_one_only_digests(fixture_registry, tmp_path):
    """An empty store cannot hold a tag's manifest: a cold build GETs it at once (a HEAD first
    would cost a round trip per image for nothing); a rebuild asks only for digests."""
    seen: list[tuple[str, str]] = []

    def record(h, server):
        seen.append((h.command, h.path))
        return False  # passed on unchanged

    front = RegistryFront(fixture_registry.registry.url, fault=record)
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]})
        refs = [parse(r) for r in REFS]
        store = BlobStore(tmp_path / "cache")
        _source(yaml, store).images(refs)
        cold, seen[:] = list(seen), []
        _source(yaml, store).images(refs)
    finally:
        front.stop()
    assert [path for method, path in cold if method == "HEAD"] == []
    assert sorted(seen) == sorted(("HEAD", f"/v2/{r.repository}/manifests/{r.tag}")
                                  for r in refs)
