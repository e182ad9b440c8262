"""The writing half of the OCI distribution client: blobs and manifests into one registry.

Follows the distribution spec's push flow (opencontainers/distribution-spec spec.md "Push"):
HEAD a blob first (skip it if present); mount it from another repository of the same registry
(POST ?mount=&from=, 201) when we know one holds it; else POST an upload session, then PUT
the blob monolithically with ?digest=, or PATCH it in chunks and close with PUT ?digest=.
Manifests are PUT by digest, then by tag.

Retries: HEAD goes through transport.send's retries. A POST, PATCH or PUT is not retried as
such (transport only retries idempotent methods): the whole blob upload is started again in
a NEW session, after a HEAD shows the blob did not land after all; a manifest PUT (idempotent:
same body, same digest) is sent again. Auth uses push scopes (`repository:NAME:pull,push`,
plus `repository:FROM:pull` for a mount). Every error body is read bounded; messages name the
blob or image and the registry host, never credentials or query strings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import BinaryIO
from urllib.parse import quote, urljoin

import requests

from bundler.digest import CHUNK
from bundler.errors import NetworkError, RegistryError
from bundler.registry import retry, transport
from bundler.registry.auth import Authenticator
from bundler.registry.body import MIN_RATE, TooSlow, error_body, release, too_slow
from bundler.registry.client import error_code, printable
from bundler.registry.endpoint import DEFAULT_TIMEOUT, Endpoint
from bundler.registry.targets import check_target, host_of, origin, without_userinfo

# Blobs up to this size go in one PUT; larger ones in PATCH chunks of CHUNK_SIZE (some
# registries and proxies in front of them cap a request body; distribution does not).
MONOLITHIC_MAX = 512 << 20
CHUNK_SIZE = 64 << 20

Opener = Callable[[], BinaryIO]


class Writer:
    """Pushes blobs and manifests to one registry endpoint."""

    def __init__(self, endpoint: Endpoint, timeout: float = DEFAULT_TIMEOUT, *,
                 monolithic_max: int = MONOLITHIC_MAX, chunk_size: int = CHUNK_SIZE,
                 policy: retry.Policy = retry.DEFAULT):
        self._base = without_userinfo(endpoint.url)
        # The API root: url + /v2, or the url itself for an override_path endpoint (K3s).
        self._root = without_userinfo(endpoint.api_root)
        self.host = host_of(self._base)
        self._timeout = timeout
        self._session = transport.new_session(endpoint.tls)
        self._auth = Authenticator(self._session, self._base, endpoint.credentials, timeout)
        self._auth_lock = threading.Lock()
        self._monolithic_max = monolithic_max
        self._chunk_size = chunk_size
        self._policy = policy
        self.uploads = 0  # blobs sent (not skipped, not mounted): what a re-push must not do
        self.mounts = 0

    # -- blobs ---------------------------------------------------------------------------

    def has_blob(self, repo: str, digest: str, what: str) -> bool:
        response = self._request("HEAD", f"/{repo}/blobs/{digest}", _scope(repo), what)
        self._done(response)
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._error(response, what)

    def mount(self, repo: str, digest: str, source: str, what: str) -> bool:
        """Whether the registry mounted the blob from `source` (201); anything else (202: a
        session was opened instead; a registry without mounts) is False and the caller
        uploads."""
        path = f"/{repo}/blobs/uploads/?mount={quote(digest)}&from={quote(source)}"
        response = self._request("POST", path, f"{_scope(repo)} repository:{source}:pull", what)
        self._done(response)
        if response.status_code == 201:
            self.mounts += 1
            return True
        return False  # a 202 opened a session we leave unused; the registry expires it

    def upload(self, repo: str, digest: str, size: int, opener: Opener, what: str) -> None:
        """Send the blob (opened afresh for every attempt) in a new upload session."""
        attempts = retry.Attempts(self._policy)
        while True:
            try:
                self._upload_once(repo, digest, size, opener, what)
                self.uploads += 1
                return
            except (NetworkError, RegistryError) as e:
                retryable = isinstance(e, NetworkError) or (
                    isinstance(e, RegistryError) and e.status in retry.RETRY_STATUSES)
                if not retryable or isinstance(e, TooSlow):
                    raise  # a registry that takes uploads slowly does so on every try
                # It may have landed before the connection broke: then it is done.
                if self.has_blob(repo, digest, what):
                    self.uploads += 1
                    return
                delay = attempts.wait()
                if delay is None:
                    raise
                retry.log.info("%s; uploading again in a new session after %.1fs", e, delay)

    def _upload_once(self, repo: str, digest: str, size: int, opener: Opener, what: str) -> None:
        scope = _scope(repo)
        response = self._request("POST", f"/{repo}/blobs/uploads/", scope, what)
        if response.status_code != 202:
            raise self._error(response, what)
        location = self._location(response, what)
        self._done(response)
        stream = opener()
        try:
            if size > self._monolithic_max:
                location = self._patch_chunks(location, scope, stream, size, what)
                body: object = b""
                length = 0
            else:
                body, length = _Body(stream, size, what, self.host, self._timeout), size
            url = location + ("&" if "?" in location else "?") + f"digest={quote(digest)}"
            response = self._request("PUT", url, scope, what, data=body, headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(length)})
        finally:
            getattr(stream, "close", lambda: None)()
        if response.status_code not in (201, 204):
            raise self._error(response, what)
        self._done(response)

    def _patch_chunks(self, location: str, scope: str, stream: BinaryIO, size: int, what: str
                      ) -> str:
        start = 0
        while start < size:
            n = min(self._chunk_size, size - start)
            chunk = _Body(stream, n, what, self.host, self._timeout)
            response = self._request("PATCH", location, scope, what, data=chunk,
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Range": f"{start}-{start + n - 1}",
                                              "Content-Length": str(n)})
            if response.status_code != 202:
                raise self._error(response, what)
            location = self._location(response, what)
            self._done(response)
            start += n
        return location

    # -- manifests -----------------------------------------------------------------------

    def manifest_digest(self, repo: str, ref: str, what: str) -> str | None:
        """The digest `ref` (tag or digest) points at in `repo`, or None when it is absent."""
        response = self._request("HEAD", f"/{repo}/manifests/{ref}", _scope(repo), what,
                                 headers={"Accept": ", ".join(_MANIFEST_TYPES)})
        self._done(response)
        if response.status_code == 200:
            return response.headers.get("Docker-Content-Digest") or ""
        if response.status_code == 404:
            return None
        raise self._error(response, what)

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str, what: str) -> None:
        attempts = retry.Attempts(self._policy)
        while True:
            try:
                response = self._request("PUT", f"/{repo}/manifests/{ref}", _scope(repo),
                                         what, data=body, headers={"Content-Type": media_type})
            except NetworkError as e:
                delay = attempts.wait()
                if delay is None:
                    raise
                retry.log.info("%s; sending the manifest again after %.1fs", e, delay)
                continue
            if response.status_code in (200, 201):
                self._done(response)
                return
            if response.status_code in retry.RETRY_STATUSES:
                after = retry.retry_after(response.headers.get("Retry-After"))
                error = self._error(response, what)
                delay = attempts.wait(after)
                if delay is None:
                    raise error
                retry.log.info("%s; sending the manifest again after %.1fs", error, delay)
                continue
            raise self._error(response, what)

    # -- requests ------------------------------------------------------------------------

    def _done(self, response: requests.Response) -> None:
        # Read to its (empty or small) end, a response gives its connection back to the
        # pool; close() would drop it, and every HEAD of a re-push would open a new one.
        release(response, self._timeout)

    def _request(self, method: str, path_or_url: str, scope: str, what: str, *,
                 data: object = None, headers: dict[str, str] | None = None
                 ) -> requests.Response:
        url = path_or_url if "://" in path_or_url else self._root + path_or_url
        sent = self._authorization(url, scope)
        response = self._send(method, url, sent, what, data, headers or {})
        if response.status_code == 401 and origin(url) == origin(self._base):
            if isinstance(data, _Body) and data.sent:
                return response  # its stream is spent; the caller's retry starts afresh
            # Several threads meet the same challenge; the Authenticator answers it once
            # (a second answer() of a Basic challenge says no), so ask again whenever the
            # header we now hold is not the one that was refused.
            with self._auth_lock:
                answered = self._auth.answer(response, scope, what) \
                    if self._auth.authorization(scope) == sent else True
            now = self._authorization(url, scope)
            if answered and now != sent:
                release(response, self._timeout)
                response = self._send(method, url, now, what, data, headers or {})
        return response

    def _authorization(self, url: str, scope: str) -> str | None:
        # Credentials only to the endpoint's own origin: an upload Location may name another.
        if origin(url) != origin(self._base):
            return None
        return self._auth.authorization(scope)

    def _send(self, method: str, url: str, authorization: str | None, what: str, data: object,
              headers: dict[str, str]) -> requests.Response:
        sent = dict(headers)
        if authorization:
            sent["Authorization"] = authorization
        return transport.send(self._session, method, url, sent, stream=True,
                              timeout=self._timeout, what=what, policy=self._policy,
                              data=data)

    def _location(self, response: requests.Response, what: str) -> str:
        location = response.headers.get("Location")
        if not location:
            response.close()
            raise RegistryError(f"{what}: {self.host} opened an upload without a Location")
        target = without_userinfo(urljoin(response.url, location))
        # An upload location is a redirect the registry chose: an https registry must not move
        # the blob (and the session state in its URL) to plain http, e.g. a TLS-terminating
        # proxy that does not tell the registry the original scheme.
        check_target(target, self._base, what, "names as its upload location",
                     came_from=response.url)
        return target

    def _error(self, response: requests.Response, what: str) -> RegistryError:
        status = response.status_code
        code, message = error_code(error_body(response, self._timeout))
        detail = f"{code}: {message}" if code else printable(response.reason or "")
        if status in (401, 403):
            text = f"{what}: push refused by {self.host} ({status} {detail}); check the " \
                   f"credentials and that they may push there"
        elif status == 413:
            text = f"{what}: {self.host} refused it as too large (413 {detail})"
        elif status == 400 and self._base.startswith("http://") and not code:
            # What a TLS server answers to plain HTTP; --to picks http for loopback hosts.
            text = f"{what}: {self.host} answered 400 {detail}; if it speaks TLS, write " \
                   f"--to https://{self.host}"
        else:
            text = f"{what}: {self.host} answered {status} {detail}".rstrip()
        return RegistryError(text, status=status, code=code or None)


_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def _scope(repo: str) -> str:
    return f"repository:{repo}:pull,push"


class _Body:
    """Exactly `size` bytes of a stream as a request body (requests sends len() as its
    Content-Length and reads it in chunks); a shorter stream is an error, not a short
    upload. A registry must keep taking it: after a grace of 2 x --timeout, at least
    MIN_RATE bytes a second on average, as for downloads (BodyReader). Each send of a
    chunk finishing inside --timeout would otherwise let a registry reading a few hundred
    bytes a second hold a push for days."""

    def __init__(self, stream: BinaryIO, size: int, what: str, host: str,
                 timeout: float = DEFAULT_TIMEOUT):
        self._stream = stream
        self._left = size
        self._size = size
        self._what = what
        self._host = host
        self._grace = 2 * timeout
        self._started: float | None = None
        self.sent = False

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = CHUNK) -> bytes:
        self.sent = True
        now = time.monotonic()
        if self._started is None:
            self._started = now
        taken = self._size - self._left
        if too_slow(taken, now - self._started, self._grace):
            raise TooSlow(
                f"{self._what}: {self._host} took {taken} bytes in {now - self._started:.0f}s "
                f"(under {MIN_RATE >> 10} KiB/s after a {self._grace:g}s grace)")
        if self._left <= 0:
            return b""
        data = self._stream.read(min(n if n and n > 0 else CHUNK, self._left))
        if not data:
            raise OSError(f"blob ended {self._left} bytes early")
        self._left -= len(data)
        return data
