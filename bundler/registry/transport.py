"""HTTP sessions and requests: TLS, timeouts, and translation of requests' errors.

Registry code never touches connection details; it gets a session from new_session() and sends
through send(). Foreign exceptions are turned into NetworkError here, where they enter.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from bundler import __version__
from bundler.config import DEFAULT_TIMEOUT, TLSConfig
from bundler.errors import NetworkError, RegistryError
from bundler.registry import retry

USER_AGENT = f"bundler/{__version__}"

log = logging.getLogger(__name__)


def new_session(tls: TLSConfig) -> requests.Session:
    """A session speaking to one endpoint with its TLS settings."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # Proxies come from the environment as usual; credentials never do. requests reads
    # ~/.netrc for any request (redirect targets too) when the session has no auth of its own
    # (issue 10 item 4); an auth that adds nothing turns that off and leaves proxies alone.
    session.trust_env = True
    session.auth = _NoNetrc()
    for prefix in ("http://", "https://"):
        session.mount(prefix, _Adapter())
    if tls.insecure_skip_verify:
        # Mirrors the K3s option; it disables certificate checks, so say so every run.
        log.warning("TLS certificate verification is off for this endpoint (insecure_skip_verify)")
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        session.verify = False
    elif tls.ca_file:
        session.verify = tls.ca_file
    if tls.cert_file:
        session.cert = (tls.cert_file, tls.key_file)
    return session


class _NoNetrc(requests.auth.AuthBase):
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


class _HeaderDeadline:
    """A connection whose status line and headers must all arrive within 2 x the read
    timeout. Each recv is bounded by --timeout, but http.client accepts 100 header lines of
    64 KiB each, which a server trickling a byte at a time could stretch over weeks."""

    def getresponse(self):  # noqa: ANN201 - urllib3's own signature
        sock = self.sock
        limit = 2 * (self.timeout if isinstance(self.timeout, (int, float)) else DEFAULT_TIMEOUT)
        cut = threading.Event()

        def expire() -> None:
            cut.set()
            try:  # the plain socket's shutdown: SSLSocket.shutdown is not for another thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

        timer = threading.Timer(limit, expire)
        timer.daemon = True
        timer.start()
        try:
            response = super().getresponse()
        except Exception:
            if not cut.is_set():
                raise
            response = None
        finally:
            timer.cancel()
        if cut.is_set():
            # The cut may also look like headers that simply ended: never trust those.
            raise urllib3.exceptions.ReadTimeoutError(
                None, "", f"headers not complete after {limit:g}s")
        return response


class _HTTPConnection(_HeaderDeadline, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_HeaderDeadline, urllib3.connection.HTTPSConnection):
    pass


_POOLS = {
    "http": type("HTTPPool", (urllib3.HTTPConnectionPool,), {"ConnectionCls": _HTTPConnection}),
    "https": type("HTTPSPool", (urllib3.HTTPSConnectionPool,),
                  {"ConnectionCls": _HTTPSConnection}),
}


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with connections that bound the time headers may take."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy, **kwargs):  # noqa: ANN001, ANN201 - requests' own
        manager = super().proxy_manager_for(proxy, **kwargs)
        if type(manager) is urllib3.ProxyManager:  # SOCKS managers keep their own classes
            manager.pool_classes_by_scheme = _POOLS
        return manager


def redact(url: str) -> str:
    """The URL without query or credentials: blob-storage redirects carry signed queries."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a malformed URL)"
    return urlunsplit((parts.scheme, host_of(url), parts.path, "", ""))


def host_of(url: str) -> str:
    """host[:port] of a URL, never its userinfo: what messages may name."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:  # a port that is not a number: say nothing more than the scheme
        return "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port), the scheme's default port filled in: what credentials are bound
    to (RFC 6454); `https://h` and `https://h:443` are one origin, `http://h` is another."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def without_userinfo(url: str) -> str:
    """The URL with any user:password@ removed, so requests never turns it into a header."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query,
                       parts.fragment))


def check_target(url: str, registry_url: str, what: str, why: str,
                 came_from: str | None = None) -> None:
    """Refuse to send a request the registry chose (a redirect, a token realm) where it must
    not go (issue 10 item 6), as a RegistryError naming the registry and the target host:

    - anything but http and https (file:, ftp:, gopher: ...);
    - a redirect from https (`came_from`) to http: credentials and signed URLs would travel
      in clear text, and a registry configured as https promised they would not;
    - link-local addresses (169.254.0.0/16, fe80::/10), where cloud metadata services answer
      with the machine's own credentials; names are resolved and every address is checked;
    - loopback, unless the registry itself is on loopback: a remote registry must not make
      the build reach services of the build host (tests run everything on 127.0.0.1).
    Private networks (10/8, 172.16/12, 192.168/16, fc00::/7) stay allowed: internal mirrors
    commonly redirect blobs to internal object storage.
    """
    registry = host_of(registry_url)
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise RegistryError(f"{what}: {registry} {why} a {scheme or 'relative'}: URL; refused "
                            f"(only http and https)")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is no number, or on a broken [v6] host
        well_formed = bool(re.fullmatch(r"[A-Za-z0-9._~%:-]+", parts.hostname or ""))
    except ValueError:
        well_formed = False
    if not well_formed:
        raise RegistryError(f"{what}: {registry} {why} a malformed URL; refused")
    prefix = f"{what}: {registry} {why} {host_of(url)}"
    if scheme == "http" and came_from and urlsplit(came_from).scheme == "https":
        raise RegistryError(f"{prefix} over plain http; refused (https must not downgrade)")
    addresses = _addresses(urlsplit(url).hostname or "")
    if any(a.is_link_local for a in addresses):
        raise RegistryError(f"{prefix}, a link-local address; refused")
    own = _addresses(urlsplit(registry_url).hostname or "")
    if any(a.is_loopback for a in addresses) and not (own and all(a.is_loopback for a in own)):
        raise RegistryError(f"{prefix}, a loopback address of this machine; refused")


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        found = [ipaddress.ip_address(host.split("%", 1)[0])]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return []  # unresolvable: the request itself will say it cannot connect
        found = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    # ::ffff:169.254.169.254 reaches the IPv4 address; judge that one.
    return [getattr(a, "ipv4_mapped", None) or a for a in found]


def send(
    session: requests.Session,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    stream: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    policy: retry.Policy = retry.DEFAULT,
    what: str = "",
    **kwargs: object,
) -> requests.Response:
    """Send one request without following redirects, retrying what is worth retrying.

    Connection failures and timeouts become NetworkError once the retries are spent; a
    retryable status that persists is returned as the last response, for the caller to
    explain.
    """
    attempts = retry.Attempts(policy if method in retry.IDEMPOTENT else retry.Policy(1))
    while True:
        try:
            response = session.request(
                method, url, headers=headers, stream=stream, timeout=timeout,
                allow_redirects=False,
                # Passed per request because requests lets REQUESTS_CA_BUNDLE override a
                # session's own CA file (psf/requests#3829); a registries.yaml ca_file must win.
                verify=session.verify, **kwargs,
            )
        except ValueError as e:
            if isinstance(e, requests.exceptions.RequestException):
                raise RegistryError(str(translate(e, method, url, timeout, what))) from None
            # requests parses a redirect's Location even when told not to follow it.
            raise RegistryError(f"{what + ': ' if what else ''}{method} {redact(url)}: "
                                f"malformed answer ({_reason(e)})") from None
        except requests.exceptions.RequestException as e:
            error = translate(e, method, url, timeout, what)
            if isinstance(e, requests.exceptions.SSLError):
                raise error from None
            if not _again(attempts, error, None):
                if attempts.count > 1:
                    raise NetworkError(f"{error}, after {attempts.count} attempts") from None
                raise error from None
            continue
        if response.status_code not in retry.RETRY_STATUSES:
            return response
        after = retry.retry_after(response.headers.get("Retry-After"))
        reason = f"{what + ': ' if what else ''}{method} {redact(url)}: {response.status_code}"
        if not _again(attempts, reason, after):
            return response
        response.close()


def _again(attempts: retry.Attempts, problem: object, retry_after: float | None) -> bool:
    delay = attempts.wait(retry_after)
    if delay is None:
        return False
    log.info("%s; retrying after %.1fs (attempt %d of %d)", problem, delay,
                attempts.count + 1, attempts.policy.attempts)
    return True


def translate(
    e: requests.exceptions.RequestException, method: str, url: str,
    timeout: float = DEFAULT_TIMEOUT, what: str = "",
) -> NetworkError:
    """The NetworkError that tells the user what a requests exception means."""
    where = f"{what + ': ' if what else ''}{method} {redact(url)}"
    if isinstance(e, requests.exceptions.SSLError):
        reason = _reason(e)
        if "WRONG_VERSION_NUMBER" in reason:
            # What OpenSSL says when the server answers a TLS hello in plain HTTP.
            return NetworkError(
                f"{where}: TLS failed ({reason}); {host_of(url)} seems to speak plain HTTP: "
                f"if so, write its endpoint as http://{host_of(url)} in registries.yaml")
        return NetworkError(f"{where}: TLS failed ({reason})")
    if isinstance(e, requests.exceptions.Timeout):
        slow = re.search(r"headers not complete after \S+", str(e))
        said = slow.group(0) if slow else f"timed out after {timeout:g}s"
        return NetworkError(f"{where}: {said}")
    if isinstance(e, requests.exceptions.ConnectionError):
        return NetworkError(f"{where}: cannot connect ({_reason(e)})")
    return NetworkError(f"{where}: {_reason(e)}")


# A body may keep us waiting `2 x --timeout` seconds in all, plus one second for every
# MIN_RATE bytes it delivers. Only time spent blocked in reads counts, summed over resumes, so
# retry back-off and our own work are not charged. A link sustaining MIN_RATE (per parallel
# download) never trips it; a body trickling a byte every few seconds, each read inside
# --timeout, fails after about 2 x --timeout instead of never (issue 10 item 3).
MIN_RATE = 8 << 10
# Caps for bodies nobody should send big: registry error documents and token responses.
MAX_ERROR_BODY = 64 << 10
MAX_TOKEN_BODY = 1 << 20
_CHUNK = 1 << 20


class TooSlow(NetworkError):
    """A body arrived slower than MIN_RATE after its grace: not resumed, a trickle stays one."""


class BodyReader:
    """A response body as a file-like stream whose read errors become NetworkError.

    Never more than `limit` bytes are read (default `size + 1`, so an overlong body is
    noticed, then the connection is closed rather than drained); read(0) reads nothing and
    read() at most a chunk. Given the expected `size` and a `reopen(offset)` that asks for the
    rest again (with a Range header), a body cut off mid-way resumes from the byte it reached;
    if the server ignores Range and sends everything, the bytes already passed on are skipped.
    """

    def __init__(
        self,
        response: requests.Response,
        what: str,
        size: int | None = None,
        reopen: Callable[[int], requests.Response] | None = None,
        policy: retry.Policy = retry.DEFAULT,
        *,
        limit: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self._response = response
        self._what = what
        self._size = size
        self._limit = limit if limit is not None else (size + 1 if size is not None else None)
        self._reopen = reopen
        self._attempts = retry.Attempts(policy)
        self._grace = 2 * timeout
        self._waited = 0.0
        self._offset = 0
        self._skip = 0
        self._closed = False

    def read(self, n: int | None = -1) -> bytes:
        if n == 0 or self._closed:
            return b""
        want = _CHUNK if n is None or n < 0 else n
        if self._limit is not None:
            want = min(want, self._limit - self._offset)
            if want <= 0:
                self.close()  # at the limit: whatever more the server has, we do not want it
                return b""
        while True:
            try:
                data = self._read_raw(min(self._skip, _CHUNK) if self._skip else want)
                if self._skip and data:
                    self._skip -= len(data)
                    continue
            except (urllib3.exceptions.HTTPError, OSError) as e:
                self._resume(f"connection broke while reading ({_reason(e)})")
                continue
            if not data and self._size is not None and self._offset < self._size:
                self._resume(f"body ended after {self._offset} of {self._size} bytes")
                continue
            self._offset += len(data)
            return data

    def _read_raw(self, n: int) -> bytes:
        # read1: one recv at most, so a trickling body returns to us between bytes and the
        # rate rule above can act; read(n) would wait for all n bytes.
        started = time.monotonic()
        try:
            return self._response.raw.read1(n, decode_content=False)
        finally:
            self._waited += time.monotonic() - started
            if self._waited > self._grace + self._offset / MIN_RATE:
                self.close()
                raise TooSlow(
                    f"{self._what}: body too slow ({self._offset} bytes in {self._waited:.0f}s, "
                    f"under {MIN_RATE >> 10} KiB/s after a {self._grace:g}s grace)") from None

    def _resume(self, problem: str) -> None:
        error = NetworkError(f"{self._what}: {problem}")
        if self._reopen is None or not _again(self._attempts, error, None):
            raise error
        self._response.close()
        response = self._reopen(self._offset)
        start = _range_start(response.headers.get("Content-Range", ""))
        # 206 from where we stopped continues the body; anything else (200: Range ignored)
        # starts over, and the bytes we already passed on are skipped.
        self._skip = 0 if response.status_code == 206 and start == self._offset else self._offset
        if response.status_code == 206 and start != self._offset:
            response.close()
            response = self._reopen(-1)
            self._skip = self._offset
        self._response = response

    def close(self) -> None:
        # Closing a streamed response closes its connection without reading the rest.
        self._closed = True
        self._response.close()


def read_small(
    open_response: Callable[[], requests.Response], cap: int, what: str, *,
    timeout: float = DEFAULT_TIMEOUT, policy: retry.Policy = retry.DEFAULT,
) -> tuple[bytes, requests.Response]:
    """The whole body of a small document (manifest, token) and its response, at most `cap`
    bytes. A body cut off mid-way is asked for again from the start, under the same retry
    policy as every request (issue 11 item 1): a document is not resumed by Range, since a
    tag may point elsewhere by the time we ask again."""
    attempts = retry.Attempts(policy)
    while True:
        response = open_response()
        reader = BodyReader(response, what, limit=cap + 1, timeout=timeout)
        chunks, total = [], 0
        try:
            while chunk := reader.read():
                total += len(chunk)
                chunks.append(chunk)
        except TooSlow:
            raise
        except NetworkError as e:
            if not _again(attempts, e, None):
                raise
            continue
        finally:
            reader.close()
        if total > cap:
            raise RegistryError(f"{what}: larger than {cap} bytes; refused")
        return b"".join(chunks), response


def error_body(response: requests.Response, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """The first MAX_ERROR_BODY bytes of an error answer (what is left is not read), or b""."""
    reader = BodyReader(response, "error body", limit=MAX_ERROR_BODY, timeout=timeout)
    chunks, total = [], 0
    try:
        while total < MAX_ERROR_BODY and (chunk := reader.read()):
            total += len(chunk)
            chunks.append(chunk)
    except NetworkError:
        return b""
    finally:
        reader.close()
    return b"".join(chunks)


def _range_start(content_range: str) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range.strip())
    return int(m.group(1)) if m else None


def _reason(e: BaseException) -> str:
    # requests nests urllib3's error in its args; the innermost says what really happened.
    inner: BaseException = e
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    text = str(getattr(inner, "reason", None) or inner)
    # urllib3 prefixes the connection object's repr: "HTTPConnection(host=..., port=...): ..."
    text = re.sub(r"^(<[^>]*>|\w*Connection(Pool)?\([^)]*\)): ", "", text)
    # Some reasons quote the URL (requests' "No connection adapters were found for '...'"):
    # never its userinfo or signed query. A quote or space ends it, and must stay.
    text = re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+", lambda m: redact(m.group(0)), text)
    # One line, whatever a server put in the text: a message is one line (common.md).
    return " ".join(text.split())
