"""A registry built to exhaust, stall or leak gets one line of error and nothing else (bounded
bodies, credentials, redirects, and the TLS hint).

Each case runs `bundler build` as a subprocess against tests/hostileserver.py and bounds the
child's peak memory (its own rusage, from wait4) and its time, and checks that no credential
reaches the output or a place it must not go.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bundler.errors import RegistryError
from bundler.registry import targets
from tests import pki
from tests.cli_helpers import Measured, assert_one_line_error, measured
from tests.hostileserver import (
    REFERENCE,
    REPOSITORY,
    HostileServer,
    endless,
    redirect,
    trickle,
    trickle_headers,
)
from tests.httpreply import reply
from tests.servers import login, write_registries_yaml

USER, PASSWORD = "hostile-user", "pw-Never-Shown-7c1"
# A bundler build that fetches nothing big stays well under this (about 60 MiB measured); the
# unfixed client reached the hostile server's 512 MiB cap in under a second.
PEAK_MIB = 150


def build(tmp: Path, endpoint: str, *extra: str, configs: dict | None = None,
          env: dict[str, str] | None = None, timeout: float = 60) -> Measured:
    """`bundler build` of the hostile image through `endpoint` only, measured."""
    (tmp / "images.txt").write_text(f"{REFERENCE}\n")
    yaml = write_registries_yaml(tmp / "registries.yaml", {"docker.io": [endpoint]}, configs)
    args = ["build", "--images", str(tmp / "images.txt"), "--output-dir", str(tmp / "dist"),
            "--registries", str(yaml), "--no-default-endpoint", "--quiet",
            "--cache-dir", str(tmp / "cache"), *extra]
    return measured([sys.executable, "-m", "bundler", *args], timeout=timeout,
                    env={"DOCKER_CONFIG": str(tmp / "no-docker"), **(env or {})})


def assert_bounded(m: Measured, seconds: float) -> None:
    assert m.peak_mib < PEAK_MIB, (m.peak_mib, m.run.stderr)
    assert m.seconds < seconds, (m.seconds, m.run.stderr)
    assert PASSWORD not in m.run.stdout + m.run.stderr


def _creds(server: HostileServer, ca: Path | None = None) -> dict:
    return login(server.host, USER, PASSWORD, ca)


# --- bounded bodies --------------------------------------------------------------------------

def test_endless_layer_body_stops_at_its_size(hostile, tmp_path):
    server = hostile(lambda h: h.path == server.image.layer_path and endless(h))
    m = build(tmp_path, server.url)
    assert_one_line_error(m.run, REFERENCE, f"layer {server.image.layer_digest}",
                          "expected 4096 bytes")
    assert m.run.code == 1
    assert_bounded(m, 30)
    assert len(server.seen(server.image.layer_path)) == 2  # fetched again once, then reported


def test_trickling_layer_body_fails_after_its_grace(hostile, tmp_path):
    server = hostile(lambda h: h.path == server.image.layer_path
                     and trickle(h, server.image.layer_size, 0.3, server.stopping))
    m = build(tmp_path, server.url, "--timeout", "1")
    assert_one_line_error(m.run, REFERENCE, f"layer {server.image.layer_digest}", "too slow")
    assert m.run.code == 3
    # --timeout 1: a 2 s grace at under 8 KiB/s, not resumed; the trickle would last 20 min.
    assert_bounded(m, 15)
    assert len(server.seen(server.image.layer_path)) == 1


def test_trickling_manifest_fails_after_its_grace(hostile, tmp_path):
    server = hostile(lambda h: h.command == "GET" and "/manifests/" in h.path
                     and trickle(h, 100_000, 0.3, server.stopping))
    m = build(tmp_path, server.url, "--timeout", "1")
    assert_one_line_error(m.run, REFERENCE, "too slow")
    assert m.run.code == 3
    assert_bounded(m, 15)


def test_trickling_headers_time_out(hostile, tmp_path):
    server = hostile(lambda h: "/manifests/" in h.path
                     and trickle_headers(h, 0.3, server.stopping))
    m = build(tmp_path, server.url, "--timeout", "1")
    # Each try is cut after 2 x --timeout and retried: 6 tries, not 6 x 30 s of trickle.
    assert_one_line_error(m.run, REFERENCE, "headers not complete after 2s", "after 6 attempts")
    assert m.run.code == 3
    assert_bounded(m, 40)


def _token_challenge(realm: str):
    def challenge(h) -> bool:
        if h.path.startswith("/v2/") and not h.headers.get("Authorization"):
            return reply(h, 401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}",'
                                                           f'service="hostile"'})
        return False
    return challenge


def test_endless_token_response_is_capped(hostile, tmp_path):
    def behave(h) -> bool:
        if h.path.startswith("/token"):
            return endless(h, 200, b'{"token": "', fill=b"a")
        return _token_challenge(f"{server.plain_url}/token")(h)

    server = hostile(behave)
    m = build(tmp_path, server.url)
    assert_one_line_error(m.run, REFERENCE, "token from 127.0.0.1", "larger than 1048576 bytes")
    assert m.run.code == 1
    assert_bounded(m, 30)


def test_huge_error_body_is_capped(hostile, tmp_path):
    server = hostile(lambda h: h.command == "GET" and "/manifests/" in h.path and endless(
        h, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"', fill=b"x"))
    m = build(tmp_path, server.url)
    assert_one_line_error(m.run, REFERENCE, f"not found on {server.host}")
    assert m.run.code == 1
    assert_bounded(m, 30)


# --- credentials -----------------------------------------------------------------------------

def _basic_then(then):
    def behave(h) -> bool:
        if h.path.startswith("/v2/") and not h.headers.get("Authorization"):
            return reply(h, 401, b"", {"WWW-Authenticate": 'Basic realm="hostile"'})
        return then(h)
    return behave


def test_https_to_http_redirect_on_the_same_host_is_refused(hostile, tmp_path):
    ca, cert, key = pki.server_tls(tmp_path)

    def to_plain(h) -> bool:
        if type(h).scheme == "https" and "/manifests/" in h.path:
            return redirect(h, f"{server.plain_url}{h.path}")
        return False

    server = hostile(_basic_then(to_plain), tls=(cert, key))
    m = build(tmp_path, server.url, configs=_creds(server, ca))
    assert_one_line_error(m.run, REFERENCE, server.host, "over plain http; refused")
    assert m.run.code == 1
    assert_bounded(m, 30)
    assert [r for r in server.requests if r.scheme == "https" and r.authorization], \
        "the https side never got the credentials: the test proves nothing"
    assert not [r for r in server.requests if r.scheme == "http"]


@pytest.mark.parametrize("realm", ["http://[::1/token", "http://bad host/token"])
def test_a_malformed_token_realm_is_one_line(hostile, tmp_path, realm):
    server = hostile(_token_challenge(realm))
    m = build(tmp_path, server.url)
    assert_one_line_error(m.run, REFERENCE, "names as its token realm a malformed URL; refused")
    assert m.run.code == 1
    assert_bounded(m, 30)


def test_credentials_never_go_to_a_plain_http_realm_on_another_host(hostile, tmp_path):
    tokens = hostile(lambda h: reply(h, 200, b'{"token": "t"}'), host="127.0.0.2")
    server = hostile(_token_challenge(f"{tokens.url}/token"))
    m = build(tmp_path, server.url, configs=_creds(server))
    assert_one_line_error(m.run, REFERENCE, f"token realm on plain http at {tokens.host}",
                          "not sending the credentials")
    assert m.run.code == 1
    assert_bounded(m, 30)
    assert tokens.requests == []


def test_credentials_never_go_to_a_plain_http_realm_from_an_https_endpoint(hostile, tmp_path):
    ca, cert, key = pki.server_tls(tmp_path)

    def behave(h) -> bool:
        if h.path.startswith("/token"):
            return reply(h, 200, b'{"token": "t"}')
        return _token_challenge(f"{server.plain_url}/token")(h)

    server = hostile(behave, tls=(cert, key))
    m = build(tmp_path, server.url, configs=_creds(server, ca))
    assert_one_line_error(m.run, REFERENCE, f"token realm on plain http at {server.host}")
    assert m.run.code == 1
    assert_bounded(m, 30)
    assert not server.seen("/token")


def test_a_401_from_storage_behind_a_redirect_gets_no_credentials(hostile, tmp_path):
    """Only the endpoint may ask for the credentials: blob storage on another host answering
    401 with its own https realm must not receive them."""
    ca_key = pki.key()
    ca = pki.certificate(ca_key, "hostile CA", ca=True)
    storage_key = pki.key()
    storage_cert = pki.certificate(storage_key, "127.0.0.2", ca_key, ca, ip="127.0.0.2")
    tls = (pki.write_pem(tmp_path / "s.pem", storage_cert),
           pki.write_pem(tmp_path / "s-key.pem", storage_key))

    def storage_behave(h) -> bool:
        if h.path.startswith("/token"):
            return reply(h, 200, b'{"token": "t"}')
        return reply(h, 401, b"", {"WWW-Authenticate":
                                   f'Bearer realm="{storage.url}/token",service="s"'})

    storage = hostile(storage_behave, tls=tls, host="127.0.0.2")
    server = hostile(_basic_then(lambda h: h.path == server.image.layer_path
                                 and redirect(h, f"{storage.url}{h.path}")))
    ca_file = pki.write_pem(tmp_path / "ca.pem", ca)
    m = build(tmp_path, server.url, configs=_creds(server, ca_file))
    assert_one_line_error(m.run, REFERENCE, f"layer {server.image.layer_digest}",
                          "access denied")
    assert_bounded(m, 30)
    assert storage.seen("/v2/"), "the redirect was not followed: the test proves nothing"
    assert all(r.authorization == "" for r in storage.requests), storage.requests


def test_netrc_is_never_used(hostile, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    server = hostile()
    m = build(tmp_path, server.url, env={"HOME": str(home), "NETRC": str(netrc)})
    assert_one_line_error(m.run, REFERENCE, "not found")  # the layer is not there
    assert server.requests and all(r.authorization == "" for r in server.requests)
    assert_bounded(m, 30)


def test_userinfo_in_an_endpoint_url_is_never_shown_or_sent(hostile, tmp_path):
    server = hostile(lambda h: "/manifests/" in h.path and reply(h, 403, b""))
    m = build(tmp_path, f"http://{USER}:{PASSWORD}@{server.host}")
    assert m.run.code != 0
    assert len(m.run.stderr.strip().splitlines()) == 1, m.run.stderr
    assert_bounded(m, 30)
    assert all(r.authorization == "" for r in server.requests)


def test_client_strips_userinfo_an_endpoint_url_carries(hostile):
    # registries.yaml refuses such URLs; the client must not depend on that.
    from bundler.registry.client import Client
    from bundler.registry.endpoint import Endpoint

    server = hostile(lambda h: "/manifests/" in h.path and reply(h, 403, b""))
    client = Client(Endpoint(f"http://{USER}:{PASSWORD}@{server.host}"), timeout=5)
    with pytest.raises(RegistryError) as e:
        client.manifest(REPOSITORY, "v1", REFERENCE)
    assert f"access denied by {server.host} (403" in str(e.value)
    assert PASSWORD not in str(e.value) and USER not in str(e.value)
    assert server.requests and all(r.authorization == "" for r in server.requests)


# --- redirects -------------------------------------------------------------------------------

@pytest.mark.parametrize("target, fragment", [
    ("http://169.254.169.254/latest/meta-data/",
     "redirected to 169.254.169.254, a link-local address"),
    ("http://[fe80::1]:8080/x", "redirected to [fe80::1]:8080, a link-local address"),
    ("file:///etc/passwd", "redirected to a file: URL; refused"),
    ("http://127.0.0.1:notaport/x", "redirected to a malformed URL; refused"),
    ("http://[::1/x", "malformed answer (Invalid IPv6 URL)"),  # requests' own parse
    ("http://bad host name/x", "redirected to a malformed URL; refused"),
])
def test_dangerous_redirects_are_refused_once(hostile, tmp_path, target, fragment):
    server = hostile(lambda h: "/manifests/" in h.path and redirect(h, target))
    m = build(tmp_path, server.url)
    assert_one_line_error(m.run, REFERENCE, server.host, fragment)
    assert m.run.code == 1
    assert_bounded(m, 20)
    # An answer, not a network error: asked once (HEAD, then the GET), never retried.
    assert len(server.seen("/manifests/")) <= 2


def test_check_target_rules():
    check = targets.check_target
    check("http://127.0.0.1:5000/v2/", "http://127.0.0.1:5001", "x", "redirected to")
    check("https://10.1.2.3/blob", "https://10.9.9.9", "x", "redirected to")  # private: fine
    with pytest.raises(RegistryError, match="loopback"):
        check("http://127.0.0.1:2375/containers", "https://10.9.9.9", "x", "redirected to")
    for disguised in ("http://[::ffff:169.254.169.254]/", "http://2852039166/",
                      "http://0xA9FEA9FE/", "http://[fe80::1%25eth0]/"):
        with pytest.raises(RegistryError, match="link-local"):
            check(disguised, "https://10.9.9.9", "x", "redirected to")
    with pytest.raises(RegistryError, match="plain http"):
        check("http://10.9.9.9/b", "https://10.9.9.9", "x", "redirected to",
              came_from="https://10.9.9.9/v2/")


def test_redact_drops_userinfo_and_query():
    url = f"https://{USER}:{PASSWORD}@[::1]:5000/v2/x/blobs/sha256:ab?X-Amz-Signature=s3cr3t"
    assert targets.redact(url) == "https://[::1]:5000/v2/x/blobs/sha256:ab"
    assert targets.host_of(url) == "[::1]:5000"


# --- the TLS hint ----------------------------------------------------------------------------

def test_https_to_a_plain_http_server_hints_at_http(hostile, tmp_path):
    server = hostile()
    m = build(tmp_path, f"https://{server.host}")
    assert_one_line_error(m.run, REFERENCE, "WRONG_VERSION_NUMBER", "plain HTTP",
                          f"http://{server.host} in registries.yaml")
    assert m.run.code == 3
    assert_bounded(m, 20)
    assert REPOSITORY  # the image the run asked for was the hostile one
