import pytest

from bundler.errors import InputError
from bundler.reference import parse, quoted, valid_repository


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


HEX = "a" * 64
REPO_RULE = "(lower-case letters, digits and . _ - separators only)"


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty image reference"),
    (" \t", "empty image reference"),
    ("Busybox", f"invalid repository name 'library/Busybox' in 'Busybox' {REPO_RULE}"),
    ("busybox:", "invalid tag '' in 'busybox:'"),
    ("busybox:-bad", "invalid tag '-bad' in 'busybox:-bad'"),
    ("busybox@sha256:abc", "invalid digest in 'busybox@sha256:abc': want sha256:<64 lower-case "
                           "hex>"),
    ("busybox@md5:" + "a" * 32, f"invalid digest in 'busybox@md5:{'a' * 32}': want sha256:<64 "
                                "lower-case hex>"),
    # The digest starts at the first '@', as in Docker's grammar: a second one is in it.
    (f"a@b@sha256:{HEX}", f"invalid digest in 'a@b@sha256:{HEX}': want sha256:<64 lower-case "
                          "hex>"),
    ("rancher//x", f"invalid repository name 'rancher//x' in 'rancher//x' {REPO_RULE}"),
    # The tag is after the last '/': a colon before it belongs to the path.
    ("host.io/a:b/c", f"invalid repository name 'a:b/c' in 'host.io/a:b/c' {REPO_RULE}"),
    ("host:port:5000/x", "invalid registry host 'host:port:5000' in 'host:port:5000/x'"),
    ("docker.io/", "missing repository name in 'docker.io/'"),
    # `[ab]` has no colon: Docker reads it as a path component, not an IPv6 host.
    ("[ab]/x", f"invalid repository name '[ab]/x' in '[ab]/x' {REPO_RULE}"),
    ("a/" + "b" * 300, "image name longer than 255 characters: 'a/" + "b" * 93 + "...'"),
    ("host.io/" + "b" * 248, "image name longer than 255 characters: 'host.io/" + "b" * 87
     + "...'"),
])
def test_rejects_bad_references(text, message):
    with pytest.raises(InputError) as e:
        parse(text)
    assert str(e.value) == message


def test_a_name_of_255_characters_is_the_longest():
    assert parse("host.io/" + "b" * 247).repository == "b" * 247
    assert parse("[::1]:5000/x").registry == "[::1]:5000"


def test_valid_repository_is_the_path_grammar_up_to_255():
    assert valid_repository("rancher/hardened-multus-cni")
    assert valid_repository("a" * 255)
    assert not valid_repository("a" * 256)
    assert not valid_repository("Rancher/x")
    assert not valid_repository("")
    # The whole name, not a valid start of it.
    for bad in ("rancher/X", "rancher/x\n", "rancher/x ", "rancher/", "rancher//x", "x/../y",
                "rancher/x:tag", "rancher/x@sha256"):
        assert not valid_repository(bad), bad


def test_quoted_cuts_long_text_to_100_characters_keeping_the_closing_quote():
    assert quoted("abc") == "'abc'"
    assert quoted("x" * 98) == "'" + "x" * 98 + "'"  # 100 with its quotes: whole
    cut = quoted("x" * 99 + "yz")
    assert cut == "'" + "x" * 95 + "...'" and len(cut) == 100
