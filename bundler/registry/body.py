"""Response bodies read within bounds: size caps, a minimum rate, resumption by Range.

Every byte a registry sends us passes through BodyReader, so no body can be larger than its
caller allows nor take longer than its size justifies.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import requests
import urllib3

from bundler.errors import NetworkError, RegistryError
from bundler.registry import retry
from bundler.registry.endpoint import DEFAULT_TIMEOUT
from bundler.registry.targets import reason as _reason

_again = retry.again


# A body may keep us waiting `2 x --timeout` seconds in all, plus one second for every
# MIN_RATE bytes it delivers. Only time spent blocked in reads counts, summed over resumes, so
# retry back-off and our own work are not charged. A link sustaining MIN_RATE (per parallel
# download) never trips it; a body trickling a byte every few seconds, each read inside
# --timeout, fails after about 2 x --timeout instead of never.
MIN_RATE = 8 << 10
# Caps for bodies nobody should send big: registry error documents and token responses.
MAX_ERROR_BODY = 64 << 10
MAX_TOKEN_BODY = 1 << 20
_CHUNK = 1 << 20


class TooSlow(NetworkError):
    """A body arrived slower than MIN_RATE after its grace: not resumed, a trickle stays one."""


def too_slow(done: int, waited: float, grace: float) -> bool:
    """The one rate rule for bodies, read (BodyReader) or sent (the registry writer's
    uploads): after `grace` seconds, MIN_RATE bytes a second on average."""
    return waited > grace + done / MIN_RATE


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
            if too_slow(self._offset, self._waited, self._grace):
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
    policy as every request: a document is not resumed by Range, since a
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


# A body declared this small is read to its end when we are done with a response (a HEAD's,
# a redirect's, a 401 challenge's), so its connection carries the next request: a new one
# costs a TCP (and TLS) handshake, a round trip or more over a real network. A
# larger or undeclared body is cut off by closing the connection, as before.
MAX_DRAIN = 4 << 10


def release(response: requests.Response, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Be done with `response`: its connection goes back to the session's pool if the rest of
    its body is small and declared (read within BodyReader's bounds), else it is closed."""
    length = response.headers.get("Content-Length", "")
    small = length.isdigit() and int(length) <= MAX_DRAIN
    if not (small or response.request.method == "HEAD"):
        response.close()
        return
    reader = BodyReader(response, "drained body", limit=MAX_DRAIN + 1, timeout=timeout)
    try:
        while reader.read():
            pass
    except NetworkError:
        pass  # nothing from this body was wanted; the connection is closed below
    finally:
        # At the end of the body urllib3 has already put the connection back in the pool,
        # and this only closes the response; short of it, it closes the connection.
        reader.close()


def _range_start(content_range: str) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range.strip())
    return int(m.group(1)) if m else None

