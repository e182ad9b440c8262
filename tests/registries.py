"""Registries the registry and push tests start: behind a token server (the Docker Hub flow),
behind htpasswd over TLS, and a front that forwards every method and counts what arrives."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import requests

from tests import pki
from tests.faultproxy import HOP
from tests.httpreply import QuietHandler, handler, reply, serve
from tests.servers import Registry
from tests.tokenserver import TokenServer


@contextmanager
def token_registry(tmp_path: Path, data: Path | None = None, realm_host: str = "",
                   **token_options) -> Iterator[tuple[TokenServer, Registry]]:
    """A registry behind the token server, serving `data` (a registry's storage directory);
    `token_options` go to TokenServer (username, password, expires_in...). `realm_host`: the
    registry names its realm by this other host name for this machine."""
    tokens = TokenServer(tmp_path, **token_options)
    if realm_host:
        tokens.url = tokens.url.replace("127.0.0.1", realm_host, 1)
    tokens.start()
    try:
        registry = Registry(tmp_path / "reg", tokens.registry_config(), data=data).start()
    except BaseException:
        tokens.stop()
        raise
    try:
        yield tokens, registry
    finally:
        registry.stop()
        tokens.stop()


@contextmanager
def htpasswd_registry(tmp_path: Path, user: str, password: str, data: Path | None = None
                      ) -> Iterator[tuple[Registry, Path]]:
    """A registry over TLS that takes `user`:`password` by Basic auth, serving `data`; and
    the CA file that verifies it."""
    ca, cert, key = pki.server_tls(tmp_path)
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(subprocess.run(["htpasswd", "-Bbn", user, password],
                                       capture_output=True, text=True, check=True).stdout)
    config = f"auth:\n  htpasswd: {{realm: test-realm, path: {htpasswd}}}\n"
    registry = Registry(tmp_path / "basic", config, data=data, tls=(cert, key))
    registry.start(verify=str(ca))
    try:
        yield registry, ca
    finally:
        registry.stop()


class Front:
    """A plain HTTP front for a registry that forwards every method, counts what reaches the
    registry, and injects faults (`fault(method, path) -> status or None`)."""

    def __init__(self, upstream: str, fault=None, hang_after_puts: int | None = None,
                 head_delay: float = 0.0):
        self.upstream, self.fault = upstream, fault
        self.hang_after_puts = hang_after_puts
        self.head_delay = head_delay  # seconds each HEAD is held, so overlaps show
        self.calls: list[tuple[str, str, int]] = []
        self.hung = 0
        self.in_flight = self.most_in_flight = 0
        self.connections = 0
        self._count = threading.Lock()
        front = self

        class Counting(QuietHandler):
            def setup(self):
                super().setup()
                with front._count:
                    front.connections += 1

        self.httpd, url = serve("127.0.0.1", handler(front.handle, base=Counting))
        self.host = url.split("://", 1)[1]

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._count:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if h.command == "HEAD" and self.head_delay:
                time.sleep(self.head_delay)
            self._handle(h)
        finally:
            with self._count:
                self.in_flight -= 1

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path = h.path.split("?", 1)[0]
        status = self.fault(h.command, h.path) if self.fault else None
        if status is None and self.hang_after_puts is not None and h.command == "PUT" \
                and "/blobs/uploads/" in path and self.blob_puts() >= self.hang_after_puts:
            self.hung += 1
            time.sleep(3600)  # the client is killed meanwhile
        if status is not None:
            self.calls.append((h.command, h.path, status))
            reply(h, status, b'{"errors":[{"code":"DENIED","message":"injected"}]}')
            return
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() in ("accept", "content-type", "content-range", "authorization")}
        r = requests.request(h.command, self.upstream + h.path, headers=headers, data=body,
                             timeout=60, allow_redirects=False)
        self.calls.append((h.command, h.path, r.status_code))
        out = {k: v for k, v in r.headers.items() if k.lower() not in HOP | {"content-length"}}
        if "Location" in out:
            out["Location"] = out["Location"].replace(self.upstream, f"http://{self.host}")
        reply(h, r.status_code, r.content if h.command != "HEAD" else b"", out)

    def blob_puts(self, done: bool = True) -> int:
        return sum(1 for m, p, s in self.calls
                   if m == "PUT" and "/blobs/uploads/" in p and (s == 201 or not done))

    def uploaded_digests(self) -> list[str]:
        return [p.split("digest=", 1)[1].replace("%3A", ":") for m, p, s in self.calls
                if m == "PUT" and "/blobs/uploads/" in p and s == 201]

    def manifest_puts(self) -> int:
        return sum(1 for m, p, s in self.calls if m == "PUT" and "/manifests/" in p)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
