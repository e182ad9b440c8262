"""push of per-architecture bundles: each tag an OCI index of every platform's manifest,
pushed together or one at a time, resolved per platform by a real containerd; a tag naming
something else moved only with --force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from bundler import mediatypes as mt
from bundler.errors import InputError
from bundler.image import Descriptor
from bundler.platform import Platform
from bundler.reference import parse
from bundler.sinks.tags import Platformed, index_bytes, wants
from tests import imagegen as gen
from tests.cli_helpers import assert_one_line_error, build_args, bundler
from tests.registryseed import push_blob, push_image, push_index, push_manifest
from tests.servers import Registry

STEM = "k3s-airgap-images-multus"
MULTI = ["rancher/multilist:v1", "docker.io/rancher/ociindex:v1"]
ARCHES = ("amd64", "arm64")
ACCEPT = ", ".join(mt.MANIFESTS)


@pytest.fixture(scope="module")
def dist(fixture_registry, tmp_path_factory) -> Path:
    """An amd64 and an arm64 bundle of the multi-arch test images, from one build."""
    tmp = tmp_path_factory.mktemp("perarch")
    run = bundler(*build_args(fixture_registry, tmp, MULTI, "--arch", ",".join(ARCHES)))
    assert run.code == 0, run.stderr
    return tmp / "dist"


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "reg").start()
    yield reg
    reg.stop()


def _bundle(dist: Path, arch: str) -> str:
    return str(dist / f"{STEM}-{arch}.tar.zst")


def _recorded(dist: Path) -> dict[str, dict[str, dict]]:
    """reference -> arch -> the image as the bundle's manifest.json records it."""
    out: dict[str, dict[str, dict]] = {}
    for arch in ARCHES:
        for item in json.loads((dist / f"{STEM}-{arch}.manifest.json").read_text())["images"]:
            out.setdefault(item["reference"], {})[arch] = item
    return out


def _repo_tag(reference: str) -> tuple[str, str]:
    repo, tag = reference.removeprefix("docker.io/").rsplit(":", 1)
    return repo, tag


def _get(url: str, repo: str, ref: str) -> requests.Response:
    r = requests.get(f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=10)
    r.raise_for_status()
    return r


def _indexes(url: str, dist: Path) -> dict[str, bytes]:
    """reference -> the bytes its tag names, each checked to be an OCI index of the bundles'
    manifests (sorted by platform, each the manifest's own descriptor), every one of which
    the registry serves by digest."""
    out = {}
    for ref, by_arch in _recorded(dist).items():
        repo, tag = _repo_tag(ref)
        r = _get(url, repo, tag)
        assert r.headers["Content-Type"] == mt.OCI_INDEX
        doc = json.loads(r.content)
        assert doc["mediaType"] == mt.OCI_INDEX and doc["schemaVersion"] == 2
        entries = doc["manifests"]
        assert [e["platform"]["architecture"] for e in entries] == list(ARCHES)
        for entry, arch in zip(entries, ARCHES, strict=True):
            want = by_arch[arch]
            assert entry["digest"] == want["manifestDigest"]
            body = _get(url, repo, want["manifestDigest"]).content
            assert entry["size"] == len(body)
            assert entry["mediaType"] == json.loads(body)["mediaType"]
            assert "/".join(entry["platform"][k] for k in ("os", "architecture", "variant")
                            if k in entry["platform"]) == want["platform"]
        out[ref] = r.content
    return out


def test_two_arches_in_one_push_tag_an_index_and_json_says_its_digest(dist, registry):
    run = bundler("push", _bundle(dist, "amd64"), _bundle(dist, "arm64"), "--to",
                  registry.host, "--json")
    assert run.code == 0, run.stderr
    indexes = _indexes(registry.url, dist)
    images = json.loads(run.stdout)["images"]
    assert len(images) == 4
    for item in images:
        digest = gen.digest(indexes[item["reference"]])
        assert item["indexDigest"] == digest
        recorded = _recorded(dist)[item["reference"]]
        assert item["manifestDigest"] in {v["manifestDigest"] for v in recorded.values()}
    # Run again, nothing is sent and the bundles are read only up to their metadata.
    again = bundler("push", _bundle(dist, "arm64"), _bundle(dist, "amd64"), "--to",
                    registry.host, "--json")
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["verified"] is False
    assert {i["indexDigest"] for i in json.loads(again.stdout)["images"]} == \
        {gen.digest(b) for b in indexes.values()}


@pytest.mark.parametrize("order", [ARCHES, ARCHES[::-1]])
def test_one_arch_at_a_time_gives_the_same_index_bytes(dist, registry, tmp_path, order):
    together = Registry(tmp_path / "together").start()
    try:
        assert bundler("push", *(_bundle(dist, a) for a in ARCHES), "--to",
                       together.host).code == 0
        want = _indexes(together.url, dist)
    finally:
        together.stop()
    first = bundler("push", _bundle(dist, order[0]), "--to", registry.host)
    assert first.code == 0, first.stderr
    for ref, by_arch in _recorded(dist).items():  # alone, the tag names the manifest
        repo, tag = _repo_tag(ref)
        assert gen.digest(_get(registry.url, repo, tag).content) == \
            by_arch[order[0]]["manifestDigest"]
    second = bundler("push", _bundle(dist, order[1]), "--to", registry.host)
    assert second.code == 0, second.stderr
    assert "warning" not in second.stderr  # a merge replaces nothing
    assert _indexes(registry.url, dist) == want
    # Either bundle pushed again leaves the index as it is: nothing to push.
    again = bundler("push", _bundle(dist, order[0]), "--to", registry.host, "--json")
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["verified"] is False
    assert _indexes(registry.url, dist) == want


def _hosts_dir(tmp: Path, url: str) -> Path:
    d = tmp / "certs.d"
    (d / "docker.io").mkdir(parents=True)
    (d / "docker.io" / "hosts.toml").write_text(
        f'server = "https://registry-1.docker.io"\n[host."{url}"]\n'
        '  capabilities = ["pull", "resolve"]\n')
    return d


@pytest.mark.parametrize("arch", ARCHES)
def test_containerd_pulls_each_platform_s_manifest_through_the_registry(
        dist, registry, tmp_path, clean_containerd, arch):
    run = bundler("push", _bundle(dist, "amd64"), _bundle(dist, "arm64"), "--to",
                  registry.host)
    assert run.code == 0, run.stderr
    hosts = _hosts_dir(tmp_path, registry.url)
    namespace = f"pull-{arch}"
    for ref, by_arch in _recorded(dist).items():
        pulled = clean_containerd.ctr("images", "pull", "--plain-http", "--hosts-dir",
                                      str(hosts), "--platform", f"linux/{arch}",
                                      "--snapshotter", "native", ref, namespace=namespace)
        assert pulled.returncode == 0, pulled.stderr
        content = clean_containerd.ctr("content", "ls", "-q", namespace=namespace).stdout
        other = "arm64" if arch == "amd64" else "amd64"
        # The platform's manifest, as the bundle records it; not the other platform's.
        assert by_arch[arch]["manifestDigest"] in content.split()
        assert by_arch[other]["manifestDigest"] not in content.split()
        assert by_arch[arch]["configDigest"] in content.split()
    clean_containerd.ctr("images", "rm", "--sync", *_recorded(dist), namespace=namespace)


def _artifact(url: str, repo: str, tag: str) -> str:
    config = b'{"kind": "not an image"}'
    push_blob(url, repo, config)
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.example.thing.v1+json",
                                  "digest": gen.digest(config), "size": len(config)},
                       "layers": []}).encode()
    push_manifest(url, repo, tag, body, mt.OCI_MANIFEST)
    return gen.digest(body)


def _same_platform(url: str, repo: str, tag: str) -> str:
    img = gen.image([gen.tar_layer(gen.random_files(41))])  # linux/amd64, another image
    push_image(url, repo, img, tag)
    return img.digest


def _foreign_index(url: str, repo: str, tag: str) -> str:
    img = gen.image([gen.tar_layer(gen.random_files(42))], oci=True, arch="s390x")
    att = gen.attestation(img)
    body, media = gen.index([img, att], oci=True)
    push_index(url, repo, tag, [img, att], body, media)
    return gen.digest(body)


@pytest.mark.parametrize("occupy,what", [
    (_artifact, "that is no image (an artifact)"),
    (_same_platform, "another linux/amd64 manifest than this push's"),
    (_foreign_index, "with entries that are not one image's platforms"),
])
def test_a_tag_naming_something_else_moves_only_with_force(dist, registry, occupy, what):
    repo, tag = "rancher/multilist", "v1"
    taken = occupy(registry.url, repo, tag)
    bundles = (_bundle(dist, "amd64"), _bundle(dist, "arm64"))
    run = bundler("push", *bundles, "--to", registry.host)
    assert_one_line_error(run, f"tag {repo}:{tag} names ", taken, what, "nothing tagged",
                          "--force replaces it")
    assert run.code == 1
    assert gen.digest(_get(registry.url, repo, tag).content) == taken
    # Refused before any byte was sent: the other image is not there either.
    r = requests.head(f"{registry.url}/v2/rancher/ociindex/manifests/v1", timeout=10)
    assert r.status_code == 404

    forced = bundler("push", *bundles, "--to", registry.host, "--force", "--json")
    assert forced.code == 0, forced.stderr
    index = _indexes(registry.url, dist)["docker.io/rancher/multilist:v1"]
    line = f"{repo}:{tag} was "
    said = [s for s in forced.stderr.splitlines() if line in s]
    assert len(said) == 1 and said[0].startswith("bundler: warning: "), forced.stderr
    assert taken in said[0] and f"becomes index {gen.digest(index)}" in said[0]
    assert json.loads(forced.stdout)["replaced"] == [said[0].removeprefix("bundler: warning: ")]


def test_another_platform_under_the_tag_is_merged_not_replaced(dist, registry):
    """A single s390x manifest under the tag (pushed by another tool): pushing amd64 keeps
    it, by its digest, in the index beside amd64."""
    repo, tag = "rancher/multilist", "v1"
    img = gen.image([gen.tar_layer(gen.random_files(43))], arch="s390x")
    push_image(registry.url, repo, img, tag)
    run = bundler("push", _bundle(dist, "amd64"), "--to", registry.host)
    assert run.code == 0, run.stderr
    doc = json.loads(_get(registry.url, repo, tag).content)
    amd = _recorded(dist)["docker.io/rancher/multilist:v1"]["amd64"]["manifestDigest"]
    assert [(e["platform"]["architecture"], e["digest"]) for e in doc["manifests"]] == \
        [("amd64", amd), ("s390x", img.digest)]
    assert doc["manifests"][1] == {"mediaType": img.media_type, "digest": img.digest,
                                   "size": len(img.manifest),
                                   "platform": {"architecture": "s390x", "os": "linux"}}


# -- the index and the tag plan, without a registry -------------------------------------------


def _entry(arch: str, n: int, variant: str | None = None) -> Platformed:
    return Platformed(Descriptor(mt.OCI_MANIFEST, f"sha256:{n:064x}", 100 + n),
                      Platform("linux", arch, variant))


def test_index_bytes_are_sorted_by_platform_whatever_the_order_given():
    a, b, c = _entry("amd64", 1), _entry("arm64", 2, "v8"), _entry("arm", 3, "v7")
    assert index_bytes([a, b, c]) == index_bytes([c, b, a])
    doc = json.loads(index_bytes([b, a, c]))
    assert [e["platform"] for e in doc["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm", "os": "linux", "variant": "v7"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"}]
    assert doc["manifests"][0] == {"mediaType": mt.OCI_MANIFEST, "digest": f"sha256:{1:064x}",
                                   "size": 101, "platform": doc["manifests"][0]["platform"]}
    assert list(doc) == ["schemaVersion", "mediaType", "manifests"]


def test_two_bundles_with_one_platform_of_a_tag_under_two_digests_are_refused():
    ref = parse("rancher/x:v1")
    a, b = _entry("amd64", 1), _entry("amd64", 2)
    with pytest.raises(InputError, match=r"one\.tar\.zst and two\.tar\.zst both hold "
                                         r"docker\.io/rancher/x:v1 for linux/amd64"):
        wants([("rancher/x", ref, a.descriptor, a.platform, "one.tar.zst"),
               ("rancher/x", ref, b.descriptor, b.platform, "two.tar.zst")])
    # The same manifest twice is one entry; another platform makes an index.
    got = wants([("rancher/x", ref, a.descriptor, a.platform, "one.tar.zst"),
                 ("rancher/x", ref, a.descriptor, a.platform, "one.tar.zst"),
                 ("rancher/x", ref, _entry("arm64", 3).descriptor, Platform("linux", "arm64"),
                  "two.tar.zst")])
    assert len(got) == 1 and [m.platform.architecture for m in got[0].manifests] == \
        ["amd64", "arm64"]
    assert got[0].target()[1] is not None


def test_a_tag_set_by_another_push_meanwhile_is_not_tagged_over(dist, registry):
    """Another tool puts an s390x image under the tag after push planned it (here: when push
    sends its first manifest by digest). Tagging over it would drop s390x: push refuses in one
    line, and pushed again, merges it."""
    from tests.registries import Front

    repo, tag = "rancher/multilist", "v1"
    other = gen.image([gen.tar_layer(gen.random_files(44))], arch="s390x")
    moved: list[str] = []

    def meanwhile(method: str, path: str) -> None:
        if method == "PUT" and "/manifests/sha256:" in path and not moved:
            moved.append(path)
            push_image(registry.url, repo, other, tag)

    front = Front(registry.url, fault=meanwhile)
    try:
        run = bundler("push", _bundle(dist, "amd64"), "--to", front.host)
    finally:
        front.stop()
    assert_one_line_error(run, f"tag {repo}:{tag} changed while push ran (it names "
                          f"{other.digest} now, not nothing)", "push again")
    assert "--force" not in run.stderr
    assert run.code == 1
    assert gen.digest(_get(registry.url, repo, tag).content) == other.digest
    again = bundler("push", _bundle(dist, "amd64"), "--to", registry.host)
    assert again.code == 0, again.stderr
    doc = json.loads(_get(registry.url, repo, tag).content)
    assert [e["digest"] for e in doc["manifests"]] == [
        _recorded(dist)["docker.io/rancher/multilist:v1"]["amd64"]["manifestDigest"],
        other.digest]
