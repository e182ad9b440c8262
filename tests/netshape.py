"""A network-shaped front: an HTTP proxy on loopback that makes a local registry look far away.

Measured only against a loopback registry, where a request costs ~1 ms and bandwidth is
free, bundler's serial round trips and idle connections never showed. This front
adds a fixed delay to every request (default 50 ms, a cross-region round trip) and caps each
connection's bandwidth in each direction (default 20 MB/s), and passes everything else through
as it came: method, path, headers (the client's Host too, so the upstream's absolute Location
URLs name the front), status, Range answers, redirects (never followed), HEAD, keep-alive.

Only hop-by-hop headers (RFC 9110 7.6.1) are the front's own business on each side; bodies are
re-framed only when the upstream sends them chunked. One upstream connection per client
connection, so a client that reuses its connection is rewarded as it would be on a network.
Threads, 16 KiB buffers, every read bounded in time; `stop()` closes every connection and
joins every thread. Used by scripts/bench and tests/test_netshape.py; runnable by hand:
    python -m tests.netshape http://127.0.0.1:5000 --delay-ms 50 --rate-mbs 20
"""

from __future__ import annotations

import argparse
import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

CHUNK = 16 << 10  # one pacing step: 0.8 ms at 20 MB/s, so the rate is smooth, not bursty
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade", "proxy-authenticate", "proxy-authorization"}
# The front answers Expect: 100-continue itself (the base class does), so it goes no further.
_NOT_FORWARDED = _HOP | {"expect"}
_NO_BODY = {204, 304}


class Pacer:
    """Spends `rate` bytes per second on one direction of one connection. The schedule, not
    the clock after each sleep, decides the next slot, so sleep overshoot does not add up; a
    pause longer than a slot earns no burst afterwards."""

    def __init__(self, rate: float, stopping: threading.Event):
        self.rate = rate
        self.stopping = stopping
        self.next = 0.0

    def spend(self, n: int) -> None:
        now = time.monotonic()
        start = max(self.next, now)
        if start > now:
            self.stopping.wait(start - now)
        self.next = start + n / self.rate


class _Server(ThreadingHTTPServer):
    # Joined on close (not daemon threads): stop() returns only when every handler has ended.
    daemon_threads = False
    block_on_close = True


class NetShape:
    """Front for `upstream` (http://host:port) on 127.0.0.1: `delay` seconds added to every
    request, `rate` bytes/s per connection and direction. `timeout` bounds every wait on the
    upstream and on an idle client connection."""

    def __init__(self, upstream: str, *, delay: float = 0.05, rate: float = 20e6,
                 host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"netshape: upstream must be http://host:port, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.delay, self.rate, self.timeout = delay, rate, timeout
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.requests = 0
        self.connections = 0
        self.bytes_down = 0  # response bodies sent to clients
        self._httpd = _Server((host, port), self._handler())
        self.host = f"{host}:{self._httpd.server_address[1]}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="netshape")

    def start(self) -> NetShape:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut every open connection (client and upstream), join every thread."""
        self.stopping.set()
        self._httpd.shutdown()
        with self._lock:
            for s in list(self._sockets):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> NetShape:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _track(self, s: socket.socket | None, add: bool) -> None:
        if s is None:
            return
        with self._lock:
            if add:
                self._sockets.add(s)
            else:
                self._sockets.discard(s)

    def _count(self, requests: int = 0, connections: int = 0, down: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.connections += connections
            self.bytes_down += down

    def _handler(self) -> type:
        front = self

        class Handler(_Proxy):
            pass

        Handler.front = front
        Handler.timeout = front.timeout  # idle keep-alive client connections end after this
        return Handler


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    front: NetShape

    def setup(self) -> None:
        super().setup()
        self.front._track(self.connection, True)
        self.front._count(connections=1)
        self.upstream: http.client.HTTPConnection | None = None
        self.up = Pacer(self.front.rate, self.front.stopping)
        self.down = Pacer(self.front.rate, self.front.stopping)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._close_upstream()
            self.front._track(self.connection, False)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (OSError, http.client.HTTPException):
            # The client went away, the upstream broke off mid-body (the client sees a short
            # body and a closed connection), or stop() cut the connection.
            self.close_connection = True

    # The methods the distribution API uses; anything else gets the base class's 501.
    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _proxy(self) -> None:
        self.front._count(requests=1)
        if self.front.stopping.wait(self.front.delay):
            self.close_connection = True
            return
        try:
            resp = self._forward()
        except (OSError, http.client.HTTPException, ValueError) as e:
            self._close_upstream()
            self.send_error(502, f"netshape: upstream {self.front.upstream}: {e}")
            self.close_connection = True
            return
        try:
            self._answer(resp)
        finally:
            resp.close()
            if resp.will_close:
                self._close_upstream()

    def _connect(self) -> http.client.HTTPConnection:
        if self.upstream is None:
            host, port = self.front.upstream
            conn = http.client.HTTPConnection(host, port, timeout=self.front.timeout)
            conn.connect()
            # http.client drops .sock when a response says close; remember it for stop().
            self.upstream, self._upstream_sock = conn, conn.sock
            self.front._track(conn.sock, True)
        return self.upstream

    def _close_upstream(self) -> None:
        if self.upstream is not None:
            self.front._track(self._upstream_sock, False)
            self.upstream.close()
            self.upstream = None

    def _forward(self) -> http.client.HTTPResponse:
        """Send this request upstream, headers as they came. A kept-alive upstream connection
        the upstream has closed meanwhile is reopened once, for requests without a body."""
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = int(self.headers.get("Content-Length") or 0)
        for attempt in (1, 2):
            conn = self._connect()
            try:
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in _NOT_FORWARDED:
                        conn.putheader(k, v)
                if chunked:
                    conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                if chunked:
                    self._relay_chunked_body(conn)
                else:
                    self._relay_body(conn, length)
                return conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):
                self._close_upstream()
                if attempt == 2 or chunked or length:
                    raise
        raise AssertionError("unreachable")

    def _relay_body(self, conn: http.client.HTTPConnection, length: int,
                    chunked: bool = False) -> None:
        while length > 0:
            data = self.rfile.read(min(CHUNK, length))
            if not data:
                raise ConnectionError("client closed mid-body")
            self.up.spend(len(data))
            conn.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            length -= len(data)

    def _relay_chunked_body(self, conn: http.client.HTTPConnection) -> None:
        while size := self._chunk_size():
            self._relay_body(conn, size, chunked=True)
            self.rfile.readline(1024)  # the CRLF after the chunk's data
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers are dropped, as a proxy may (RFC 9112 7.1.2)
        conn.send(b"0\r\n\r\n")

    def _chunk_size(self) -> int:
        line = self.rfile.readline(1024)
        try:
            return int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ConnectionError(f"bad chunk size line {line[:40]!r}") from None

    def _answer(self, resp: http.client.HTTPResponse) -> None:
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP:
                self.send_header(k, v)
        bodyless = self.command == "HEAD" or resp.status in _NO_BODY or resp.status < 200
        framed = resp.getheader("Content-Length") is not None
        rechunk = not bodyless and not framed and resp.chunked
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        elif not bodyless and not framed:
            self.close_connection = True  # the body ends where the connection does
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if bodyless:
            return
        while data := resp.read(CHUNK):
            self.down.spend(len(data))
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if rechunk else data)
            self.front._count(down=len(data))
        if rechunk:
            self.wfile.write(b"0\r\n\r\n")


def main() -> int:
    ap = argparse.ArgumentParser(description="Serve a network-shaped front for an HTTP upstream.")
    ap.add_argument("upstream", help="http://host:port")
    ap.add_argument("--delay-ms", type=float, default=50.0)
    ap.add_argument("--rate-mbs", type=float, default=20.0, help="MB/s per connection")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    front = NetShape(args.upstream, delay=args.delay_ms / 1000, rate=args.rate_mbs * 1e6,
                     port=args.port).start()
    print(f"netshape: {front.url} -> {args.upstream}, +{args.delay_ms:g} ms a request, "
          f"{args.rate_mbs:g} MB/s a connection; Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        front.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
