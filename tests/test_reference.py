import pytest

from bundler.errors import InputError
from bundler.reference import parse


@pytest.mark.parametrize(("text", "normalized"), [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36.1", "docker.io/library/busybox:1.36.1"),
    ("rancher/x:1", "docker.io/rancher/x:1"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/rancher/x:v1", "docker.io/rancher/x:v1"),
    ("registry-1.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
    ("localhost/x", "localhost/x:latest"),
    ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
    ("Quay.IO/org/img:V1.0_x-y", "quay.io/org/img:V1.0_x-y"),
    ("127.0.0.1:5000/img", "127.0.0.1:5000/img:latest"),
    ("img@sha256:" + "a" * 64, "docker.io/library/img@sha256:" + "a" * 64),
    ("img:t@sha256:" + "b" * 64, "docker.io/library/img:t@sha256:" + "b" * 64),
])
def test_normalizes_like_docker(text, normalized):
    assert str(parse(text)) == normalized


def test_parts():
    ref = parse("rancher/hardened-multus-cni:v4.3.0-build20260722")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "docker.io", "rancher/hardened-multus-cni", "v4.3.0-build20260722", None)
    assert ref.image_name == "docker.io/rancher/hardened-multus-cni:v4.3.0-build20260722"
    assert ref.ref == "v4.3.0-build20260722"
    pinned = parse("busybox@sha256:" + "c" * 64)
    assert pinned.tagged_name is None
    assert pinned.image_name == "docker.io/library/busybox@sha256:" + "c" * 64
    assert pinned == parse("docker.io/library/busybox@sha256:" + "c" * 64)


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty"),
    ("Busybox", "invalid repository name"),
    ("busybox:", "invalid tag"),
    ("busybox:-bad", "invalid tag"),
    ("busybox@sha256:abc", "invalid digest"),
    ("busybox@md5:" + "a" * 32, "invalid digest"),
    ("rancher//x", "invalid repository name"),
    ("host:port:5000/x", "invalid registry host"),
    ("docker.io/", "missing repository"),
    ("a/" + "b" * 300, "longer than"),
])
def test_rejects_bad_references(text, fragment):
    with pytest.raises(InputError, match=fragment):
        parse(text)
