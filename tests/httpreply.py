"""What the tests' own HTTP servers share: a handler class that logs nothing and hands the
methods it serves to one function, a server on a thread, and the answers they write (whole,
cut off, or reset), so that each server says only what makes it different."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The methods of the distribution API (and Docker's); a handler answers any other with 501.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (kept-alive connections, as registries keep them), no log line a request."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass


def handler(answer: Callable[[BaseHTTPRequestHandler], object], *methods: str,
            base: type[BaseHTTPRequestHandler] = QuietHandler) -> type[BaseHTTPRequestHandler]:
    """A subclass of `base` whose `methods` (all of METHODS if none are named) call
    `answer(h)`."""
    def do(self: BaseHTTPRequestHandler) -> None:
        answer(self)

    return type("Handler", (base,), {f"do_{m}": do for m in methods or METHODS})


def serve(host: str, handler_class: type) -> tuple[ThreadingHTTPServer, str]:
    """A threading server for `handler_class` on a free port of `host`, serving on a daemon
    thread; the server and its http:// URL."""
    httpd = ThreadingHTTPServer((host, 0), handler_class)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://{host}:{httpd.server_address[1]}"


def head(h: BaseHTTPRequestHandler, status: int, length: int | None,
         headers: dict[str, str] | None = None) -> None:
    """The status line and `headers`, with Content-Length `length` unless it is None."""
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    if length is not None:
        h.send_header("Content-Length", str(length))
    h.end_headers()


def reply(h: BaseHTTPRequestHandler, status: int, body: bytes = b"",
          headers: dict[str, str] | None = None) -> bool:
    """A whole answer (no body to a HEAD); True, for a hook that says it has answered."""
    head(h, status, len(body), headers)
    if h.command != "HEAD":
        h.wfile.write(body)
    return True


def cut_off(h: BaseHTTPRequestHandler, body: bytes, sent: int,
            headers: dict[str, str] | None = None, *, reset: bool = False) -> bool:
    """Declare all of `body`, send its first `sent` bytes and hang up: with `reset`, shut the
    socket down at once (a connection reset mid-body)."""
    head(h, 200, len(body), headers)
    h.wfile.write(body[:sent])
    h.wfile.flush()
    if reset:
        h.connection.shutdown(socket.SHUT_RDWR)
    h.close_connection = True
    return True
