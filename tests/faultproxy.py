"""An HTTP front for the real registry that the tests put between bundler and it.

It forwards every request to the registry, and can demand Basic auth and send blob downloads
on a redirect to a second server (another loopback address, like a storage CDN) that records
which headers reached it. Fault injection for the fetch tests hooks in at `fault`.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

# Headers that describe one hop, not the content: a front answering with its own body drops them.
HOP = {"connection", "transfer-encoding", "keep-alive", "content-encoding"}


def serve(host: str, handler: type) -> tuple[ThreadingHTTPServer, str]:
    httpd = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://{host}:{httpd.server_address[1]}"


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

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                front.handle(self, "front")

            def do_GET(self):
                front.handle(self, "front")

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
            self._reply(h, 401, b"", {"WWW-Authenticate": 'Basic realm="front"'})
            return
        if self.fault and self.fault(h, server):
            return
        if server == "front" and self.redirect_blobs and "/blobs/" in h.path:
            self._reply(h, 307, b"", {"Location": f"{self.storage_url}{h.path}?sig=secret"})
            return
        path = h.path.split("?", 1)[0]
        # Without auth of its own the front passes the client's on (token auth upstream).
        passed = ("accept", "range") if self.username else ("accept", "range", "authorization")
        headers = {k: v for k, v in h.headers.items() if k.lower() in passed}
        r = requests.request(h.command, self.upstream + path, headers=headers, timeout=30,
                             allow_redirects=True)
        out = {k: v for k, v in r.headers.items() if k.lower() not in HOP | {"content-length"}}
        self._reply(h, r.status_code, r.content, out)

    def upstream_body(self, path: str) -> bytes:
        r = requests.get(self.upstream + path.split("?", 1)[0], timeout=30)
        r.raise_for_status()
        return r.content

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    @staticmethod
    def reply(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict) -> None:
        RegistryFront._reply(h, status, body, headers)

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def stop(self) -> None:
        for httpd in (self._front, self._storage):
            httpd.shutdown()
            httpd.server_close()
