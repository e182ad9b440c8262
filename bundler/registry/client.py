"""The OCI distribution API for one endpoint: manifests and blobs, digest-checked by callers.

Requests carry the Accept header for every manifest kind we read (OCI index and manifest,
Docker list and manifest v2); without it a registry may answer with one platform or schema1.
"""

from __future__ import annotations

import json
from urllib.parse import urljoin

import requests

from bundler import mediatypes
from bundler.digest import DIGEST_RE, sha256_digest
from bundler.errors import DigestMismatch, RegistryError
from bundler.registry import retry, transport
from bundler.registry.auth import Authenticator
from bundler.registry.body import BodyReader, error_body, read_small, release
from bundler.registry.endpoint import DEFAULT_TIMEOUT, Endpoint
from bundler.registry.targets import check_target, host_of, origin, redact, without_userinfo
from bundler.text import shown

# distribution refuses manifests over 4 MiB; anything larger is not a manifest.
MAX_MANIFEST = 4 << 20
_MAX_REDIRECTS = 10


class Client:
    """Reads manifests and blobs from one registry endpoint; threads may share one Client
    (give `pool` >= their number, so each keeps a connection alive for its next request)."""

    def __init__(self, endpoint: Endpoint, timeout: float = DEFAULT_TIMEOUT,
                 pool: int = transport.POOL, known_challenge: dict[str, str] | None = None):
        self.endpoint = endpoint
        # A user:password@ in the URL is never sent, nor shown: credentials come from
        # registries.yaml `configs` or Docker's config.json, and messages name host_of().
        self._base = without_userinfo(endpoint.url)
        self.host = host_of(self._base)
        # What repositories go after: `<url>/v2`, or the endpoint's own path as K3s takes it.
        self._root = without_userinfo(endpoint.api_root)
        self._timeout = timeout
        self._session = transport.new_session(endpoint.tls, pool)
        # known_challenge: this endpoint's Bearer challenge from an earlier run (auth.py).
        self._auth = Authenticator(self._session, self._base, endpoint.credentials, timeout,
                                   known=known_challenge)

    def challenge(self) -> dict[str, str] | None:
        """This endpoint's Bearer challenge (realm, service) if it is anonymous and gave one:
        what a later run may pass as known_challenge."""
        return self._auth.challenge()

    def manifest(self, repository: str, ref: str, what: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest; a digest `ref` is checked."""
        what = f"{what}: manifest {ref}" if ref.startswith("sha256:") else what
        body, response = read_small(
            lambda: self._get(repository, f"manifests/{ref}", what, accept=mediatypes.MANIFESTS),
            MAX_MANIFEST, what, timeout=self._timeout)
        digest = sha256_digest(body)
        if ref.startswith("sha256:") and digest != ref:
            raise DigestMismatch(f"{what}: manifest digest mismatch: expected {ref}, got {digest}")
        return body, media_type_of(body, response.headers.get("Content-Type", "")), digest

    def has_manifest(self, repository: str, digest: str, what: str) -> bool | None:
        """Whether this repository holds the manifest `digest` (one HEAD): False on 404, None
        when the registry does not answer HEAD. A manifest cached from another repository
        must not stand in for one this repository lacks."""
        try:
            response = self._get(repository, f"manifests/{digest}", what,
                                 accept=mediatypes.MANIFESTS, method="HEAD")
        except RegistryError as e:
            if e.status == 404:
                return False
            if e.status in (401, 403) or e.status in retry.RETRY_STATUSES:
                raise
            return None
        release(response, self._timeout)
        said = response.headers.get("Docker-Content-Digest", "")
        return said in ("", digest)

    def manifest_digest(self, repository: str, tag: str, what: str) -> str | None:
        """The digest a tag points at, from a HEAD (which Docker Hub does not count against
        its pull limit); None when the registry does not say."""
        try:
            response = self._get(repository, f"manifests/{tag}", what,
                                 accept=mediatypes.MANIFESTS, method="HEAD")
        except RegistryError as e:
            if e.status in (401, 403, 404) or e.status in retry.RETRY_STATUSES:
                raise  # the GET would get the same answer
            return None  # a registry that does not do HEAD (405, 501): the GET will tell
        release(response, self._timeout)
        digest = response.headers.get("Docker-Content-Digest", "")
        return digest if DIGEST_RE.fullmatch(digest) else None

    def blob(self, repository: str, digest: str, what: str, size: int | None = None
             ) -> BodyReader:
        """A stream of the blob's bytes (unchecked: wrap it in digest.VerifyingReader).

        With `size`, a download cut off mid-way resumes with a Range request.
        """
        path = f"blobs/{digest}"

        def reopen(offset: int) -> requests.Response:
            return self._get(repository, path, what, ranged_from=offset)

        return BodyReader(self._get(repository, path, what), what, size, reopen,
                          timeout=self._timeout)

    def _get(
        self, repository: str, path: str, what: str, accept: tuple[str, ...] = (),
        ranged_from: int = -1, method: str = "GET",
    ) -> requests.Response:
        repo = self.endpoint.repository(repository)
        url = f"{self._root}/{repo}/{path}"
        scope = f"repository:{repo}:pull"
        headers = {"Accept": ", ".join(accept)} if accept else {}
        if ranged_from > 0:
            headers["Range"] = f"bytes={ranged_from}-"
        self._auth.prepare(scope, what)
        response, sent = self._follow(method, url, headers, scope, what)
        # Only the endpoint itself may ask for our credentials: a 401 from storage behind a
        # redirect could name any realm.
        if response.status_code == 401 and origin(response.url) == origin(self._base) \
                and self._auth.answer(response, scope, what, sent=sent):
            release(response, self._timeout)
            response, _ = self._follow(method, url, headers, scope, what)
        if response.status_code != 200 and not (ranged_from > 0 and response.status_code == 206):
            raise _error(response, what, self.host, self._timeout)
        return response

    def _follow(self, method: str, url: str, headers: dict[str, str], scope: str, what: str
                ) -> tuple[requests.Response, str | None]:
        """The first answer that is no redirect, and the Authorization the request for it
        carried (so a 401 to a token another thread has since replaced is retried, not
        answered again)."""
        # Redirects are followed by hand so Authorization goes only to the endpoint's own
        # origin (scheme, host, port): blob storage behind a redirect must never see the
        # registry's credentials, nor may a redirect to http:// on the same host name.
        own = origin(self._base)
        for _ in range(_MAX_REDIRECTS + 1):
            sent = dict(headers)
            if origin(url) == own:
                authorization = self._auth.authorization(scope)
                if authorization:
                    sent["Authorization"] = authorization
            response = transport.send(
                self._session, method, url, sent, stream=True, timeout=self._timeout, what=what
            )
            if response.status_code not in (301, 302, 303, 307, 308):
                return response, sent.get("Authorization")
            location = response.headers.get("Location")
            release(response, self._timeout)
            if not location:
                break
            target = without_userinfo(urljoin(url, location))
            check_target(target, self._base, what, "redirected to", came_from=url)
            url = target
        raise RegistryError(f"{what}: {method} {redact(url)}: too many redirects")


def media_type_of(body: bytes, content_type: str = "") -> str:
    """A manifest's media type: its own mediaType field, else told by its fields."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = {}  # the manifest parser says what is wrong with it
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    if declared and isinstance(declared, str):
        return declared
    if isinstance(doc, dict) and doc.get("schemaVersion") == 2:
        # OCI documents may omit mediaType; tell index from manifest by their fields.
        return mediatypes.OCI_INDEX if "manifests" in doc else mediatypes.OCI_MANIFEST
    return content_type.split(";")[0].strip()


def _error(response: requests.Response, what: str, host: str,
           timeout: float = DEFAULT_TIMEOUT) -> RegistryError:
    status = response.status_code
    code, message = error_code(error_body(response, timeout))
    detail = f"{code}: {message}" if code else printable(response.reason or "")
    if status == 404:
        text = f"{what}: not found on {host} ({detail or 404})"
    elif status in (401, 403):
        text = f"{what}: access denied by {host} ({status} {detail}); check credentials"
    elif status == 429:
        # Docker Hub states its pull limit in these headers; show them so the user can tell.
        limits = ", ".join(f"{printable(k.lower())}: {printable(v)}"
                           for k, v in response.headers.items()
                           if k.lower().startswith("ratelimit-"))
        text = f"{what}: rate limited by {host} (429 {detail}){'; ' + limits if limits else ''}"
    else:
        text = f"{what}: {host} answered {status} {detail}".rstrip()
    return RegistryError(text, status=status, code=code or None)


def error_code(body: bytes) -> tuple[str, str]:
    """code and message of the first entry of a distribution error document, shortened."""
    try:
        errors = json.loads(body).get("errors") or []
        code, message = errors[0].get("code") or "", errors[0].get("message") or ""
    except (ValueError, RecursionError, AttributeError, LookupError, TypeError):
        return "", ""
    if not isinstance(code, str) or not isinstance(message, str):
        return "", ""
    return printable(code), printable(message)


def printable(text: str) -> str:
    """A registry's text (an error message, a reason, a header) for our one line."""
    return shown(text, limit=200)
