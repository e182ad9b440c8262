"""A registry built to lie, exhaust or leak, for the hostile-registry tests.

It serves one small image (docker.io/hostile/img:v1) whose one layer is whatever a test
makes it: an endless body, a trickle, a redirect. A test passes `behave(h)`, called for every
request before the default answer; it returns True when it has answered. With `tls`, the
same port speaks TLS and plain HTTP (told apart by the first byte), so an https endpoint can
redirect to http:// on exactly the same host and port. Every request is recorded with its
scheme and Authorization header. Endless and trickling answers are bounded in bytes and time,
so a client that never stops reading cannot keep the test machine busy for long.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests import imagegen as gen
from tests.httpreply import handler, head, reply

REPOSITORY, TAG = "hostile/img", "v1"
REFERENCE = f"docker.io/{REPOSITORY}:{TAG}"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
# Bounds on what one hostile answer sends: enough to show a client that reads without limit
# (the unfixed client took 1.7 GB in 3 s), small enough to spare a shared machine.
ENDLESS_BYTES = 512 << 20
ENDLESS_SECONDS = 30.0


@dataclass
class FakeImage:
    """A linux/amd64 image with one layer of `layer_size` declared bytes (never served whole)."""

    layer_size: int = 4096
    layer_digest: str = gen.digest(b"a layer nobody will ever see")
    config: bytes = field(init=False)
    manifest: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [gen.digest(b"its diff id")]},
        }).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_V2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": gen.digest(self.config), "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": self.layer_digest, "size": self.layer_size}],
        }).encode()

    @property
    def layer_path(self) -> str:
        return f"/v2/{REPOSITORY}/blobs/{self.layer_digest}"

    @property
    def manifest_path(self) -> str:
        return f"/v2/{REPOSITORY}/manifests/{TAG}"


@dataclass
class Seen:
    scheme: str
    method: str
    path: str
    authorization: str


class HostileServer:
    """The hostile registry on 127.0.0.1 (or `host`), plain HTTP or TLS-and-plain on one port."""

    def __init__(self, behave: Callable[[BaseHTTPRequestHandler], bool] | None = None, *,
                 tls: tuple[Path, Path] | None = None, host: str = "127.0.0.1"):
        self.behave = behave
        self.image = FakeImage()
        self.requests: list[Seen] = []
        self.stopping = threading.Event()
        hostile = self
        context = None
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))

        Handler = handler(hostile._handle)
        Handler.scheme = "http"

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                # In the request's own thread: a TLS hello starts with 0x16 (handshake).
                request.settimeout(10)
                try:
                    first = request.recv(1, socket.MSG_PEEK)
                    if context is not None and first == b"\x16":
                        request = context.wrap_socket(request, server_side=True)
                        handler = type("TLSHandler", (Handler,), {"scheme": "https"})
                    else:
                        handler = Handler
                    handler(request, client_address, self)
                except (OSError, ssl.SSLError):
                    pass  # a client that hung up, or refused our certificate

        self.httpd = Server((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.host = f"{host}:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self.plain_url = f"http://{self.host}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        self.requests.append(Seen(type(h).scheme, h.command, h.path,
                                  h.headers.get("Authorization", "")))
        try:
            if self.behave and self.behave(h):
                return
            self.serve_image(h)
        except OSError:
            h.close_connection = True  # the client went away: what these tests expect

    def serve_image(self, h: BaseHTTPRequestHandler) -> None:
        """The default answers: /v2/, the manifest, the config; 404 for anything else."""
        path = h.path.split("?", 1)[0]
        img = self.image
        if path == "/v2/":
            reply(h, 200, b"{}")
        elif path in (img.manifest_path, f"/v2/{REPOSITORY}/manifests/{gen.digest(img.manifest)}"):
            reply(h, 200, img.manifest, {"Content-Type": MANIFEST_V2,
                                         "Docker-Content-Digest": gen.digest(img.manifest)})
        elif path == f"/v2/{REPOSITORY}/blobs/{gen.digest(img.config)}":
            reply(h, 200, img.config)
        else:
            reply(h, 404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"nothing here"}]}')

    def seen(self, path_part: str = "") -> list[Seen]:
        return [r for r in self.requests if path_part in r.path]

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def endless(h: BaseHTTPRequestHandler, status: int = 200, prefix: bytes = b"",
            headers: dict[str, str] | None = None, fill: bytes = b"\0") -> bool:
    """An answer whose body never ends (up to ENDLESS_BYTES / ENDLESS_SECONDS), no length."""
    head(h, status, None, {**(headers or {}), "Connection": "close"})
    h.close_connection = True
    chunk = fill * (1 << 16)
    sent, started = 0, time.monotonic()
    h.wfile.write(prefix)
    while sent < ENDLESS_BYTES and time.monotonic() - started < ENDLESS_SECONDS:
        h.wfile.write(chunk)
        sent += len(chunk)
    return True


def trickle(h: BaseHTTPRequestHandler, length: int, interval: float,
            stop: threading.Event) -> bool:
    """A body of `length` declared bytes sent one byte every `interval` seconds (each read
    of the client's succeeds within its timeout), for at most ENDLESS_SECONDS."""
    head(h, 200, length)
    h.close_connection = True
    started = time.monotonic()
    for _ in range(length):
        if stop.wait(interval) or time.monotonic() - started > ENDLESS_SECONDS:
            break
        h.wfile.write(b"\0")
        h.wfile.flush()
    return True


def redirect(h: BaseHTTPRequestHandler, location: str) -> bool:
    return reply(h, 307, b"", {"Location": location})


def trickle_headers(h: BaseHTTPRequestHandler, interval: float, stop: threading.Event) -> bool:
    """A status line, then one header that never ends: a byte every `interval` seconds."""
    h.close_connection = True
    h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    started = time.monotonic()
    while not stop.wait(interval) and time.monotonic() - started < ENDLESS_SECONDS:
        h.wfile.write(b"a")
        h.wfile.flush()
    return True
