"""HTTP sessions and requests: TLS, timeouts, and translation of requests' errors.

Registry code never touches connection details; it gets a session from new_session() and sends
through send(). Foreign exceptions are turned into NetworkError here, where they enter.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from bundler import __version__
from bundler.config import DEFAULT_TIMEOUT, TLSConfig
from bundler.errors import NetworkError

USER_AGENT = f"bundler/{__version__}"

log = logging.getLogger(__name__)


def new_session(tls: TLSConfig) -> requests.Session:
    """A session speaking to one endpoint with its TLS settings."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # Proxies come from the environment as usual; credentials never do (no netrc).
    session.trust_env = True
    session.auth = None
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


def redact(url: str) -> str:
    """The URL without query or credentials: blob-storage redirects carry signed queries."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def send(
    session: requests.Session,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    stream: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    **kwargs: object,
) -> requests.Response:
    """Send one request without following redirects; connection failures become NetworkError."""
    try:
        return session.request(
            method, url, headers=headers, stream=stream, timeout=timeout, allow_redirects=False,
            # Passed per request because requests lets REQUESTS_CA_BUNDLE override a session's
            # own CA file (psf/requests#3829); a registries.yaml ca_file must win.
            verify=session.verify, **kwargs,
        )
    except requests.exceptions.RequestException as e:
        raise translate(e, method, url, timeout) from None


def translate(
    e: requests.exceptions.RequestException, method: str, url: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> NetworkError:
    """The NetworkError that tells the user what a requests exception means."""
    where = f"{method} {redact(url)}"
    if isinstance(e, requests.exceptions.SSLError):
        return NetworkError(f"{where}: TLS failed ({_reason(e)})")
    if isinstance(e, requests.exceptions.Timeout):
        return NetworkError(f"{where}: timed out after {timeout:g}s")
    if isinstance(e, requests.exceptions.ConnectionError):
        return NetworkError(f"{where}: cannot connect ({_reason(e)})")
    return NetworkError(f"{where}: {_reason(e)}")


class BodyReader:
    """A response body as a file-like stream whose read errors become NetworkError."""

    def __init__(self, response: requests.Response, what: str):
        self._response = response
        self._what = what

    def read(self, n: int = -1) -> bytes:
        try:
            return self._response.raw.read(n if n and n > 0 else None, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            reason = _reason(e)
            raise NetworkError(f"{self._what}: connection broke while reading ({reason})") from None

    def close(self) -> None:
        self._response.close()


def _reason(e: BaseException) -> str:
    # requests nests urllib3's error in its args; the innermost says what really happened.
    inner: BaseException = e
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    text = str(getattr(inner, "reason", None) or inner)
    # urllib3 prefixes the connection object's repr: "HTTPConnection(host=..., port=...): ..."
    return re.sub(r"^(<[^>]*>|\w*Connection(Pool)?\([^)]*\)): ", "", text)
