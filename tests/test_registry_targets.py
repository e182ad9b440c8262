"""registry.targets: where a URL a registry hands us may send a request, and how messages may
name URLs (no userinfo, no signed query)."""

from __future__ import annotations

import pytest

from bundler.errors import RegistryError
from bundler.registry import targets

REMOTE = "https://10.9.9.9"  # a registry that is not on this machine


def _refused(url: str, registry: str = REMOTE, came_from: str | None = None) -> str:
    with pytest.raises(RegistryError) as e:
        targets.check_target(url, registry, "img", "redirected to", came_from=came_from)
    return str(e.value)


@pytest.mark.parametrize(("url", "scheme"), [
    ("file:///etc/passwd", "file"), ("ftp://10.1.2.3/x", "ftp"), ("gopher://h/", "gopher"),
    ("/v2/elsewhere", "relative"), ("HTTPS-ish://h/", "https-ish"),
])
def test_only_http_and_https_are_followed(url, scheme):
    assert _refused(url) == (f"img: 10.9.9.9 redirected to a {scheme}: URL; refused "
                             "(only http and https)")


@pytest.mark.parametrize("url", [
    "http://10.1.2.3:notaport/x", "http://bad host/x", "http:///x",
    "http://[::1/x",  # urlsplit's own refusal: a realm like it once ended build in a traceback
    "http://h\u00e9/x", "http://a\"b/x", "http://10.1.2.3:99999/x",
])
def test_malformed_targets_are_refused(url):
    assert _refused(url) == "img: 10.9.9.9 redirected to a malformed URL; refused"


@pytest.mark.parametrize("url", [
    "http://10.1.2.3/x", "https://10.1.2.3:8443/x", "http://h-1.example_x.~a%41:80/",
    "https://[2001:db8::1]:5000/v2/", "http://192.168.1.1/", "http://172.16.0.1/",
])
def test_private_and_public_addresses_are_allowed(url):
    targets.check_target(url, REMOTE, "img", "redirected to")


def test_https_must_not_downgrade_to_http():
    assert _refused("http://10.1.2.3/b", came_from="https://10.9.9.9/v2/") == \
        "img: 10.9.9.9 redirected to 10.1.2.3 over plain http; refused (https must not downgrade)"
    targets.check_target("http://10.1.2.3/b", REMOTE, "img", "redirected to",
                         came_from="http://10.9.9.9/v2/")
    targets.check_target("https://10.1.2.3/b", REMOTE, "img", "redirected to",
                         came_from="https://10.9.9.9/v2/")


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://169.254.0.1/",
    "http://169.254.255.255:80/", "http://[fe80::1]:8080/x", "http://[febf::1]/",
    "http://[::ffff:169.254.169.254]/", "http://2852039166/", "http://0xA9FEA9FE/",
    "http://[fe80::1%25eth0]/", "http://169.254.169.254%25eth0/",  # a zone on IPv4 too
])
def test_link_local_is_refused_even_from_a_loopback_registry(url):
    for registry in (REMOTE, "http://127.0.0.1:5000"):
        assert _refused(url, registry).endswith(", a link-local address; refused")
    assert _refused("http://169.254.169.254/x") == \
        "img: 10.9.9.9 redirected to 169.254.169.254, a link-local address; refused"


@pytest.mark.parametrize("url", ["http://169.253.255.255/", "http://169.255.0.0/",
                                 "http://[fec0::1]/", "http://[fe7f::1]/"])
def test_addresses_next_to_link_local_are_allowed(url):
    targets.check_target(url, REMOTE, "img", "redirected to")


@pytest.mark.parametrize("url", ["http://127.0.0.1:2375/containers", "http://127.9.9.9/",
                                 "http://[::1]:2375/", "http://localhost:2375/",
                                 "http://[::ffff:127.0.0.1]/"])
def test_loopback_is_refused_unless_the_registry_is_on_loopback(url):
    assert _refused(url).endswith(", a loopback address of this machine; refused")
    assert _refused(url, "https://no-such-host.invalid").endswith(
        ", a loopback address of this machine; refused")  # unresolvable is not loopback
    for registry in ("http://127.0.0.1:5000", "http://[::1]:5000", "http://localhost:5000"):
        targets.check_target(url, registry, "img", "redirected to")


def test_the_message_names_the_registry_and_the_target_never_credentials():
    text = _refused("http://user:pw@127.0.0.1:2375/x?sig=s3cr3t",
                    "https://me:secret@10.9.9.9:5000")
    assert text == ("img: 10.9.9.9:5000 redirected to 127.0.0.1:2375, a loopback address of "
                    "this machine; refused")


@pytest.mark.parametrize(("url", "host"), [
    ("https://u:p@registry.example:5000/v2/x?q=1", "registry.example:5000"),
    ("https://registry.example/v2/", "registry.example"),
    ("https://REGISTRY.example/", "registry.example"),
    ("http://[::1]:5000/v2/", "[::1]:5000"),
    ("http://[fe80::1%25eth0]/", "[fe80::1%25eth0]"),
    ("http://h:notaport/", "?"),
    ("http://h:0/", "h"),
])
def test_host_of(url, host):
    assert targets.host_of(url) == host


def test_redact_drops_userinfo_query_and_fragment():
    assert targets.redact("https://u:p@[::1]:5000/v2/x/blobs/sha256:ab?X-Amz-Signature=s#f") \
        == "https://[::1]:5000/v2/x/blobs/sha256:ab"
    assert targets.redact("http://[::1/x") == "(a malformed URL)"
    assert targets.redact("http://h:notaport/x") == "http://?/x"


@pytest.mark.parametrize(("url", "origin"), [
    ("https://h", ("https", "h", 443)), ("https://H:443/x", ("https", "h", 443)),
    ("http://h", ("http", "h", 80)), ("http://h:8080", ("http", "h", 8080)),
    ("https://h:80", ("https", "h", 80)), ("ftp://h", ("ftp", "h", None)),
])
def test_origin_fills_in_the_default_port(url, origin):
    assert targets.origin(url) == origin
    assert targets.origin("https://h") == targets.origin("https://h:443")
    assert targets.origin("https://h") != targets.origin("http://h:443")


def test_without_userinfo():
    url = "https://h:5000/v2/?q=1#f"
    assert targets.without_userinfo(url) is url
    assert targets.without_userinfo("https://u:p@h:5000/v2/?q=1#f") == url
    assert targets.without_userinfo("https://u:p@ss@h/x") == "https://h/x"  # last @ ends it
    assert targets.without_userinfo("https://h/x?next=a@b") == "https://h/x?next=a@b"


class _Wrapped(Exception):
    pass


def test_reason_is_the_innermost_cause_on_one_line_without_secrets():
    inner = ConnectionRefusedError(111, "Connection refused")
    outer = _Wrapped(_Wrapped(inner, "pool"), "request")
    assert targets.reason(outer) == "[Errno 111] Connection refused"

    class WithReason(Exception):
        reason = "timed out"

    assert targets.reason(_Wrapped(WithReason("ignored"))) == "timed out"
    prefixed = OSError("HTTPConnectionPool(host='h', port=80): Max retries exceeded")
    assert targets.reason(prefixed) == "Max retries exceeded"
    tagged = OSError("<urllib3.connection.HTTPSConnection object at 0x7f>: Failed to resolve")
    assert targets.reason(tagged) == "Failed to resolve"
    leaky = OSError("No connection adapters were found for 'https://u:p@h/x?sig=s3cr3t'\n"
                    "  and   more")
    assert targets.reason(leaky) == \
        "No connection adapters were found for 'https://h/x' and more"
    assert targets.reason(OSError("not HTTPConnection(x): at the start")) == \
        "not HTTPConnection(x): at the start"
