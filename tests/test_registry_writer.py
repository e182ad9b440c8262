"""The registry writer against registries that move or starve an upload (an attacker's
review): an https upload must not be sent on over plain http, and an upload a registry takes
slower than MIN_RATE must end, not hold a push for days."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pytest

from bundler.registry import body as registry_body
from bundler.registry import writer as registry_writer
from bundler.registry.endpoint import Endpoint
from bundler.registry.writer import Writer, _Body
from tests import hostileserver as hs
from tests import pki
from tests.cli_helpers import assert_one_line_error, bundler
from tests.conftest import STEM
from tests.httpreply import reply


def _bundle(builds) -> Path:
    return builds["p1"] / f"{STEM}.tar.zst"


def _answering(server_ref: list, put) -> object:
    """A registry with no blobs that opens every upload and hands PUT/PATCH to `put`."""

    def behave(h):
        if h.command == "HEAD":
            return reply(h, 404)
        if h.command == "POST":
            return reply(h, 202, b"", {"Location": server_ref[0]})
        if h.command in ("PUT", "PATCH"):
            return put(h)
        return reply(h, 200, b"{}")

    return behave


def test_https_upload_moved_to_plain_http_is_refused(builds, tmp_path):
    """A TLS-terminating proxy that does not tell the registry the original scheme answers the
    upload POST with an http:// Location on the same host: the blob and the session state in
    that URL must not travel in clear text."""
    ca, cert, key = pki.server_tls(tmp_path)
    location: list = []

    def put(h):
        h.rfile.read(int(h.headers.get("Content-Length", "0")))
        return reply(h, 201)

    server = hs.HostileServer(_answering(location, put), tls=(cert, key))
    location.append(f"{server.plain_url}/upload/1?_state=SESSION")
    registries = tmp_path / "registries.yaml"
    registries.write_text(f'configs:\n  "{server.host}":\n    tls: {{ca_file: "{ca}"}}\n')
    try:
        run = bundler("push", str(_bundle(builds)), "--to", f"https://{server.host}",
                      "--registries", str(registries), "--jobs", "1", timeout=120)
    finally:
        server.stop()
    assert_one_line_error(run, "upload location", "https must not downgrade")
    assert run.code == 1
    assert [r for r in server.requests if r.scheme == "http"] == []
    assert [r for r in server.requests if r.method in ("PUT", "PATCH")] == []


def test_upload_a_registry_takes_too_slowly_ends(monkeypatch):
    """A registry reading 48 KiB a second while the bound asks for 1 MiB a second (MIN_RATE
    raised so the test takes seconds, not the minutes 8 KiB/s would): each send finishes inside
    --timeout, so only the rate bound ends it, after about 2 x --timeout; and it is not tried
    again in a new session (a slow registry is slow every time)."""
    monkeypatch.setattr(registry_body, "MIN_RATE", 1 << 20)
    monkeypatch.setattr(registry_writer, "MIN_RATE", 1 << 20)  # the message reads it here
    location: list = []

    def put(h):
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        left = int(h.headers.get("Content-Length", "0"))
        while left > 0 and not server.stopping.is_set():
            chunk = h.rfile.read1(min(12 << 10, left))
            if not chunk:
                return True
            left -= len(chunk)
            time.sleep(0.25)
        return reply(h, 201)

    server = hs.HostileServer(_answering(location, put))
    location.append("/upload/1")
    size = 8 << 20
    # 8 s: each send finishes well inside it even when the machine is busy (with 3 s, a send
    # timed out before the rate rule could end the upload, on a loaded CI machine).
    writer = Writer(Endpoint(server.url), timeout=8)
    attempts: list[str] = []
    once = writer._upload_once

    def recorded(*args):
        try:
            once(*args)
        except BaseException as e:
            attempts.append(type(e).__name__)
            raise
        attempts.append("done")

    writer._upload_once = recorded
    started = time.monotonic()
    try:
        with pytest.raises(registry_body.TooSlow, match=f"blob x: {server.host} took"):
            writer.upload("x/y", "sha256:" + "0" * 64, size,
                          lambda: io.BytesIO(bytes(size)), "blob x")
    finally:
        server.stop()
    assert time.monotonic() - started < 60
    # On a loaded machine a send may time out first and be tried again; a TooSlow never is.
    assert attempts[-1] == "TooSlow" and attempts.count("TooSlow") == 1, attempts
    assert writer.uploads == 0


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_body_holds_the_registry_to_the_rate_after_the_grace(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    body = _Body(io.BytesIO(bytes(40_000)), 40_000, "blob x", "reg.example", timeout=5)
    assert len(body) == 40_000
    assert body.read(8192) == bytes(8192)
    # Inside the grace (2 x 5 s) plus 1 s per MIN_RATE bytes taken: still going.
    clock.now += 10 + 8192 / registry_body.MIN_RATE - 0.01
    assert len(body.read(8192)) == 8192
    clock.now += 0.02 + 8192 / registry_body.MIN_RATE  # past what 16 KiB earns
    with pytest.raises(registry_body.TooSlow, match=r"blob x: reg.example took 16384 bytes"):
        body.read(8192)


def test_body_at_the_rate_never_trips(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    body = _Body(io.BytesIO(bytes(1 << 20)), 1 << 20, "blob x", "reg.example", timeout=1)
    got = 0
    while data := body.read(4096):
        got += len(data)
        clock.now += 4096 / registry_body.MIN_RATE  # exactly MIN_RATE, no grace used
    assert got == 1 << 20


def test_body_shorter_than_declared_is_an_error():
    body = _Body(io.BytesIO(b"abc"), 5, "blob x", "reg.example")
    assert body.read() == b"abc"
    with pytest.raises(OSError, match="2 bytes early"):
        body.read()
