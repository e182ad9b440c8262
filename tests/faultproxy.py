"""An HTTP front for the real registry that the tests put between bundler and it.

It forwards every request to the registry, and can demand Basic auth and send blob downloads
on a redirect to a second server (another loopback address, like a storage CDN) that records
which headers reached it. Fault injection for the fetch tests hooks in at `fault`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import requests

from tests.httpreply import handler, reply, serve

# Headers that describe one hop, not the content: a front answering with its own body drops them.
HOP = {"connection", "transfer-encoding", "keep-alive", "content-encoding"}


class RegistryFront:
    """Forwards to `upstream`; optional Basic auth, blob redirects, and a fault hook."""

    def __init__(self, upstream: str, *, username: str = "", password: str = "",
                 redirect_blobs: bool = False,
                 fault: Callable[[BaseHTTPRequestHandler, str], bool] | None = None):
        self.upstream = upstream
        self.username, self.password = username, password
        self.redirect_blobs = redirect_blobs
        self.fault = fault
        self.requests: list[tuple[str, str, str]] = []  # (server, path, Authorization)
        front = self

        Handler = handler(lambda h: front.handle(h, "front"), "GET", "HEAD")

        class Storage(Handler):
            def do_GET(self):
                front.handle(self, "storage")

        self._front, self.url = serve("127.0.0.1", Handler)
        # Another loopback address: a different host as far as the client can tell.
        self._storage, self.storage_url = serve("127.0.0.2", Storage)
        self.host = self.url.split("://", 1)[1]

    def handle(self, h: BaseHTTPRequestHandler, server: str) -> None:
        auth = h.headers.get("Authorization", "")
        self.requests.append((server, h.path, auth))
        if server == "front" and self.username and auth != self._basic():
            reply(h, 401, b"", {"WWW-Authenticate": 'Basic realm="front"'})
            return
        if self.fault and self.fault(h, server):
            return
        if server == "front" and self.redirect_blobs and "/blobs/" in h.path:
            reply(h, 307, b"", {"Location": f"{self.storage_url}{h.path}?sig=secret"})
            return
        path = h.path.split("?", 1)[0]
        # Without auth of its own the front passes the client's on (token auth upstream).
        passed = ("accept", "range") if self.username else ("accept", "range", "authorization")
        headers = {k: v for k, v in h.headers.items() if k.lower() in passed}
        r = requests.request(h.command, self.upstream + path, headers=headers, timeout=30,
                             allow_redirects=True)
        out = {k: v for k, v in r.headers.items() if k.lower() not in HOP | {"content-length"}}
        reply(h, r.status_code, r.content, out)

    def upstream_body(self, path: str) -> bytes:
        r = requests.get(self.upstream + path.split("?", 1)[0], timeout=30)
        r.raise_for_status()
        return r.content

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    reply = staticmethod(reply)  # httpreply.reply, for fault hooks that name it by the front

    def stop(self) -> None:
        for httpd in (self._front, self._storage):
            httpd.shutdown()
            httpd.server_close()
