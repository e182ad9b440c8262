"""HTTP sessions and requests: TLS, timeouts, and translation of requests' errors.

Registry code never touches connection details; it gets a session from new_session() and sends
through send(). Foreign exceptions are turned into NetworkError here, where they enter.
Connections are kept alive and shared by the threads using a session: a response is either
read to its end (body.read_small, BodyReader at its size, body.release) or closed, which
is what gives its connection back to the pool or drops it.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import threading

import requests
import urllib3

from bundler import __version__
from bundler.errors import NetworkError, RegistryError
from bundler.registry import retry
from bundler.registry.body import release
from bundler.registry.endpoint import DEFAULT_TIMEOUT, TLSConfig
from bundler.registry.targets import host_of, redact
from bundler.registry.targets import reason as _reason

_again = retry.again

USER_AGENT = f"bundler/{__version__}"

log = logging.getLogger(__name__)
# requests' own default number of idle connections kept per host.
POOL = 10


def new_session(tls: TLSConfig, pool: int = POOL) -> requests.Session:
    """A session speaking to one endpoint with its TLS settings, keeping up to `pool` idle
    connections per host for reuse. Threads may share it: each request takes a connection of
    its own from the pool; `pool` should be at least the number of threads, or the extra
    connections are closed after one use."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # Proxies come from the environment as usual; credentials never do. requests reads
    # ~/.netrc for any request (redirect targets too) when the session has no auth of its
    # own; an auth that adds nothing turns that off and leaves proxies alone.
    session.trust_env = True
    session.auth = _NoNetrc()
    trusted = None if tls.insecure_skip_verify else _ca_location(tls.ca_file)
    session.mount("http://", _Adapter(pool_maxsize=max(POOL, pool)))
    session.mount("https://", _Adapter(pool_maxsize=max(POOL, pool), trusted=trusted))
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


def _ca_location(ca_file: str | None) -> str:
    """The CA file or directory requests would verify against: registries.yaml's ca_file,
    else $REQUESTS_CA_BUNDLE or $CURL_CA_BUNDLE (requests honours them: the session trusts
    the environment), else certifi's bundle (requests.adapters.cert_verify)."""
    return (ca_file or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or requests.utils.DEFAULT_CA_BUNDLE_PATH)


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with connections that bound the time headers may take, and one TLS
    context per endpoint with its CAs loaded once.

    urllib3 loads the CA file into every new TLS connection's context: certifi's bundle costs
    ~17 ms of CPU each time, and a warm rebuild from Docker Hub opens one connection per
    image to the registry and one to its token server. Here the context is made
    and loaded once, at the first https request, `trusted` being the location requests would
    load; connections of pools that carry it are given no CA file of their own. A pool
    without it (one reached through a proxy) or a request that wants other CAs keeps
    urllib3's own per-connection loading.
    """

    def __init__(self, *args, trusted: str | None = None, **kwargs):
        self._trusted = trusted
        self._context: ssl.SSLContext | None = None
        self._context_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def send(self, request, *args, **kwargs):  # noqa: ANN001, ANN201 - requests' own
        if self._trusted is not None and self._context is None:
            self._load_context()
        return super().send(request, *args, **kwargs)

    def _load_context(self) -> None:
        with self._context_lock:
            if self._context is not None:
                return
            context = urllib3.util.ssl_.create_urllib3_context()
            try:
                if os.path.isdir(self._trusted):
                    context.load_verify_locations(capath=self._trusted)
                else:
                    context.load_verify_locations(cafile=self._trusted)
            except (OSError, ValueError):
                # Unreadable or not PEM: urllib3 fails each connection on it as before,
                # in the words the user already gets (transport.translate).
                self._trusted = None
                return
            # Pools made from now on carry it (the first https request makes the first).
            self.poolmanager.connection_pool_kw["ssl_context"] = context
            self._context = context

    def cert_verify(self, conn, url: str, verify, cert) -> None:  # noqa: ANN001 - requests'
        super().cert_verify(conn, url, verify, cert)
        if self._context is None or getattr(conn, "conn_kw", {}).get("ssl_context") \
                is not self._context:
            return
        wanted = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
        if verify and wanted == self._trusted:
            conn.ca_certs = conn.ca_cert_dir = None  # in the context already
        else:
            # Never load other CAs into the shared context: this pool makes its own.
            conn.conn_kw.pop("ssl_context", None)

    def proxy_manager_for(self, proxy, **kwargs):  # noqa: ANN001, ANN201 - requests' own
        manager = super().proxy_manager_for(proxy, **kwargs)
        if type(manager) is urllib3.ProxyManager:  # SOCKS managers keep their own classes
            manager.pool_classes_by_scheme = _POOLS
        return manager


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
                    raise NetworkError(f"{error}, after {attempts.count} attempts",
                                       error.cause) from None
                raise error from None
            continue
        if response.status_code not in retry.RETRY_STATUSES:
            return response
        after = retry.retry_after(response.headers.get("Retry-After"))
        reason = f"{what + ': ' if what else ''}{method} {redact(url)}: {response.status_code}"
        if not _again(attempts, reason, after):
            return response
        release(response, timeout)



def translate(
    e: requests.exceptions.RequestException, method: str, url: str,
    timeout: float = DEFAULT_TIMEOUT, what: str = "",
) -> NetworkError:
    """The NetworkError that tells the user what a requests exception means."""
    where = f"{what + ': ' if what else ''}{method} {redact(url)}"
    said = _said(e, url, timeout)
    if isinstance(e, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        # The host's failure, not the image's: the same for every image that needs it.
        return NetworkError(f"{where}: {said}", f"{host_of(url)}: {said}")
    return NetworkError(f"{where}: {said}")


def _said(e: requests.exceptions.RequestException, url: str, timeout: float) -> str:
    """What went wrong, without the request."""
    if isinstance(e, requests.exceptions.SSLError):
        reason = _reason(e)
        if "WRONG_VERSION_NUMBER" in reason:
            # What OpenSSL says when the server answers a TLS hello in plain HTTP.
            return (f"TLS failed ({reason}); {host_of(url)} seems to speak plain HTTP: "
                    f"if so, write its endpoint as http://{host_of(url)} in registries.yaml")
        return f"TLS failed ({reason})"
    if isinstance(e, requests.exceptions.Timeout):
        slow = re.search(r"headers not complete after \S+", str(e))
        return slow.group(0) if slow else f"timed out after {timeout:g}s"
    if isinstance(e, requests.exceptions.ConnectionError):
        return f"cannot connect ({_reason(e)})"
    return _reason(e)

