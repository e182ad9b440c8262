"""HTTP sessions and requests: TLS, timeouts, and translation of requests' errors.

Registry code never touches connection details; it gets a session from new_session() and sends
through send(). Foreign exceptions are turned into NetworkError here, where they enter.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from bundler import __version__
from bundler.config import DEFAULT_TIMEOUT, TLSConfig
from bundler.errors import NetworkError
from bundler.registry import retry

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
    policy: retry.Policy = retry.DEFAULT,
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
        except requests.exceptions.RequestException as e:
            error = translate(e, method, url, timeout)
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
        reason = f"{method} {redact(url)}: {response.status_code}"
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
    """A response body as a file-like stream whose read errors become NetworkError.

    Given the expected `size` and a `reopen(offset)` that asks for the rest again (with a
    Range header), a body cut off mid-way resumes from the byte it reached; if the server
    ignores Range and sends everything, the bytes already passed on are skipped.
    """

    def __init__(
        self,
        response: requests.Response,
        what: str,
        size: int | None = None,
        reopen: Callable[[int], requests.Response] | None = None,
        policy: retry.Policy = retry.DEFAULT,
    ):
        self._response = response
        self._what = what
        self._size = size
        self._reopen = reopen
        self._attempts = retry.Attempts(policy)
        self._offset = 0
        self._skip = 0

    def read(self, n: int = -1) -> bytes:
        while True:
            try:
                data = self._response.raw.read(n if n and n > 0 else None, decode_content=False)
                if self._skip and data:
                    dropped = min(self._skip, len(data))
                    self._skip -= dropped
                    data = data[dropped:]
                    if not data:
                        continue
            except (urllib3.exceptions.HTTPError, OSError) as e:
                self._resume(f"connection broke while reading ({_reason(e)})")
                continue
            if not data and self._size is not None and self._offset < self._size:
                self._resume(f"body ended after {self._offset} of {self._size} bytes")
                continue
            self._offset += len(data)
            return data

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
        self._response.close()


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
    return re.sub(r"^(<[^>]*>|\w*Connection(Pool)?\([^)]*\)): ", "", text)
