"""registry/transport.py against a real HTTP(S) server: what a session sends, which requests
are tried again, and how requests' errors read once translated."""

from __future__ import annotations

import threading

import pytest
import requests

from bundler import __version__
from bundler.errors import NetworkError
from bundler.registry import retry
from bundler.registry.endpoint import TLSConfig
from bundler.registry.transport import new_session, send
from tests import hostileserver as hs
from tests import pki
from tests.httpreply import reply
from tests.servers import free_port

QUICK = retry.Policy(attempts=3, base=0.01, cap=0.01)


def test_a_session_says_who_it_is_and_never_reads_netrc(hostile, tmp_path, monkeypatch):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password s3cr3t\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    agents = []
    server = hostile(lambda h: agents.append(h.headers.get("User-Agent")) or reply(h, 200))
    send(new_session(TLSConfig()), "GET", server.url + "/v2/").close()
    assert agents == [f"bundler/{__version__}"]
    assert [r.authorization for r in server.requests] == [""]


@pytest.mark.parametrize("method,tries", [("GET", 3), ("HEAD", 3), ("POST", 1)])
def test_only_idempotent_requests_are_tried_again(hostile, method, tries):
    server = hostile(lambda h: reply(h, 503, b"busy"))
    response = send(new_session(TLSConfig()), method, server.url + "/x", policy=QUICK)
    assert response.status_code == 503  # the last answer, for the caller to explain
    assert len(server.requests) == tries


def test_a_passing_failure_is_tried_again_until_it_answers(hostile):
    answers = [502, 502]
    server = hostile(lambda h: bool(answers) and reply(h, answers.pop()))
    response = send(new_session(TLSConfig()), "GET", server.url + "/v2/", policy=QUICK)
    assert response.status_code == 200 and len(server.requests) == 3


def test_a_redirect_is_handed_back_not_followed(hostile):
    server = hostile(lambda h: h.path == "/a" and hs.redirect(h, "/v2/"))
    response = send(new_session(TLSConfig()), "GET", server.url + "/a")
    assert response.status_code == 307 and [r.path for r in server.requests] == ["/a"]


def test_no_connection_is_one_network_error_naming_the_url_without_its_query():
    url = f"http://127.0.0.1:{free_port()}/v2/x/blobs/sha256:ab?X-Signature=s3cr3t"
    with pytest.raises(NetworkError) as e:
        send(new_session(TLSConfig()), "GET", url, policy=QUICK, what="blob x")
    said = str(e.value)
    assert said.startswith("blob x: GET http://127.0.0.1:") and "cannot connect" in said
    assert said.endswith("after 3 attempts") and "s3cr3t" not in said


def test_headers_that_never_end_are_cut_after_twice_the_timeout(hostile):
    stop = threading.Event()
    server = hostile(lambda h: hs.trickle_headers(h, 0.05, stop))
    try:
        with pytest.raises(NetworkError, match=r"headers not complete after 1s"):
            send(new_session(TLSConfig()), "GET", server.url + "/v2/", timeout=0.5,
                 policy=retry.Policy(1))
    finally:
        stop.set()


def test_tls_to_a_plain_http_server_says_so(hostile):
    server = hostile()
    with pytest.raises(NetworkError, match=r"seems to speak plain HTTP: if so, write its "
                                           r"endpoint as http://127\.0\.0\.1:\d+ in"):
        send(new_session(TLSConfig()), "GET", f"https://{server.host}/v2/", policy=QUICK)


def test_the_ca_file_wins_over_the_environments_ca_bundle(hostile, tmp_path, monkeypatch):
    ca, cert, key = pki.server_tls(tmp_path)
    server = hostile(tls=(cert, key))
    # requests would otherwise let this override the session's own CA (psf/requests#3829).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.utils.DEFAULT_CA_BUNDLE_PATH)
    response = send(new_session(TLSConfig(ca_file=str(ca))), "GET", server.url + "/v2/")
    assert response.status_code == 200
    with pytest.raises(NetworkError, match="TLS failed"):
        send(new_session(TLSConfig()), "GET", server.url + "/v2/")
