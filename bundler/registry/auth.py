"""Registry authentication: Basic, and the Bearer token flow of the distribution token spec.

On a 401 the registry's WWW-Authenticate challenge says what to do; we answer it once per
scope and cache the token until shortly before it expires. Threads resolving images at once
share one Authenticator: a scope's token is fetched by one of them while the others wait for
it, and scopes of different repositories are fetched side by side.

An anonymous endpoint's Bearer challenge (where tokens come from, never a token) may be kept
from an earlier run and handed back as `known`: tokens are then asked for before the first
request, and a warm rebuild is a token and a HEAD instead of a 401, a token and a HEAD.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from urllib.parse import urlsplit

import requests

from bundler.errors import BundlerError, RegistryError
from bundler.registry import retry, transport
from bundler.registry.body import MAX_TOKEN_BODY, read_small
from bundler.registry.endpoint import DEFAULT_TIMEOUT, Credentials
from bundler.registry.targets import check_target, host_of, without_userinfo

_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
# Renew a token this many seconds before the registry says it expires.
_EXPIRY_MARGIN = 10
# The token spec's default lifetime when expires_in is absent.
_DEFAULT_EXPIRES_IN = 60
# What may go into an Authorization header: RFC 6750 b64token characters, bounded.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MAX_TOKEN = 16 << 10


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split `Bearer realm="...",service="..."` into ("bearer", {realm:..., service:...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM_RE.finditer(rest)}
    return scheme.lower(), params


class Authenticator:
    """Supplies the Authorization header for one registry endpoint, per pull scope.

    The header itself goes only to the endpoint's own origin (client._follow). Credentials go
    to a token realm only when that cannot put them on the wire in clear text or hand them to
    a stranger: the realm is https, or the endpoint was itself configured as http:// and the
    realm is http:// on the same host name (a registry and its token server on one machine,
    the way distribution is often deployed in a lab). Any other realm is refused with one
    line when we hold credentials: going anonymous would only trade a clear error for a
    confusing "access denied". Without credentials nothing secret is sent and any http(s)
    realm is used, subject to targets.check_target.
    """

    def __init__(self, session: requests.Session, endpoint_url: str,
                 credentials: Credentials | None, timeout: float = DEFAULT_TIMEOUT,
                 known: dict[str, str] | None = None):
        self._session = session
        self._endpoint = endpoint_url
        self._host = host_of(endpoint_url)
        self._timeout = timeout
        self._credentials = credentials
        self._scheme: str | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        # The endpoint's last Bearer challenge, without its scope: where to ask for tokens.
        self._bearer: dict[str, str] | None = None
        # `known` is used only without credentials: a kept realm is not the registry's word
        # in this run, and nothing secret may go where it points. Until a live challenge
        # confirms it, a realm that fails is dropped and the registry asked (_known).
        self._known = False
        if known and credentials is None and "realm" in known:
            self._bearer = {k: v for k, v in known.items() if k in ("realm", "service")}
            self._known = True
        self._lock = threading.Lock()  # guards _locks, _scheme, _bearer and _tokens
        self._locks: dict[str, threading.Lock] = {}  # per scope: held while answering it

    def authorization(self, scope: str) -> str | None:
        """The header value to send for `scope`, if we know one. While another thread is
        fetching this scope's token, wait for it: asking without would only earn a 401."""
        found = self._current(scope)
        if found is None and self._scope_lock(scope).locked():
            with self._scope_lock(scope):
                found = self._current(scope)
        return found

    def prepare(self, scope: str, what: str) -> None:
        """Fetch `scope`'s token before the first request for it, once this endpoint's own
        Bearer challenge (for another scope) has said where tokens come from: without, each
        new repository costs a 401 round trip first (containerd and
        go-containerregistry ask the realm directly too). The realm was checked when the
        challenge came and is checked again here, by the same rules."""
        with self._lock:
            params, known = self._bearer, self._known
        if params is None or self._current(scope) is not None:
            return
        with self._scope_lock(scope):
            if self._current(scope) is None:
                try:
                    # A kept realm gets one try: a stale one must not stall the run.
                    token = self._fetch_token(params, scope, what,
                                              retry.Policy(1) if known else retry.DEFAULT)
                except BundlerError:
                    if not known:
                        raise
                    with self._lock:
                        if self._bearer is params:
                            self._bearer, self._known = None, False
                    return  # the request goes without, and its 401 says where to ask
                with self._lock:
                    self._tokens[scope] = token

    def challenge(self) -> dict[str, str] | None:
        """Where this anonymous endpoint's tokens come from (realm, service), to be kept for
        the next run; None with credentials, or when it asked for none."""
        with self._lock:
            if self._credentials is not None or self._bearer is None:
                return None
            return {k: v for k, v in self._bearer.items() if k in ("realm", "service")}

    def _current(self, scope: str) -> str | None:
        with self._lock:
            if self._scheme == "basic":
                return self._basic()
            token = self._tokens.get(scope)
        if token and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        return None

    def _scope_lock(self, scope: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(scope, threading.Lock())

    def answer(self, response: requests.Response, scope: str, what: str,
               sent: str | None | object = ...) -> bool:
        """Handle a 401 challenge; True if a retry with new credentials makes sense.

        `sent` is the Authorization the refused request carried (None: none); when what we
        hold by now differs, another thread has answered meanwhile and its answer is used
        instead of fetching again. Left out, every call answers the challenge itself.
        """
        with self._scope_lock(scope):
            current = self._current(scope)
            if sent is not ... and current is not None and current != sent:
                return True
            scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            if scheme == "basic":
                with self._lock:
                    if self._credentials is None or self._scheme == "basic":
                        return False
                    self._scheme = "basic"
                return True
            if scheme != "bearer" or "realm" not in params:
                return False
            token = self._fetch_token(params, scope, what)
            with self._lock:
                self._tokens[scope] = token
                self._bearer = {k: v for k, v in params.items() if k != "scope"}
                self._known = False
            return True

    def _basic(self) -> str:
        c = self._credentials
        assert c is not None
        raw = f"{c.username}:{c.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _fetch_token(self, params: dict[str, str], scope: str, what: str,
                     policy: retry.Policy = retry.DEFAULT) -> tuple[str, float]:
        realm = without_userinfo(params["realm"])
        check_target(realm, self._endpoint, what, "names as its token realm")
        # The challenge names what the refused request needed (a HEAD: pull); we ask for that
        # and for our own scope too (a push: pull,push), as repeated scope parameters (token
        # spec), so one token serves both and a push costs no second 401.
        scopes = list(dict.fromkeys((params.get("scope") or "").split() + scope.split()))
        query: dict[str, object] = {"scope": scopes}
        if params.get("service"):
            query["service"] = params["service"]
        c = self._credentials
        if c and (c.identity_token or c.username):
            self._check_realm(realm, what)
        what = f"{what}: token from {host_of(realm)}"
        if c and c.identity_token:
            # An identity token is an OAuth2 refresh token (distribution docs, oauth.md).
            # POST is not retried: a server may rotate the refresh token on use.
            form = {**query, "grant_type": "refresh_token", "refresh_token": c.identity_token,
                    "client_id": "bundler"}
            body, _ = read_small(
                lambda: self._token_request("POST", realm, data=form, what=what),
                MAX_TOKEN_BODY, what, timeout=self._timeout, policy=retry.Policy(1))
        else:
            headers = {"Authorization": self._basic()} if c and c.username else {}
            body, _ = read_small(
                lambda: self._token_request("GET", realm, params=query, headers=headers,
                                            what=what, policy=policy),
                MAX_TOKEN_BODY, what, timeout=self._timeout, policy=policy)
        return _parse_token(body, realm, what)

    def _check_realm(self, realm: str, what: str) -> None:
        scheme, host = urlsplit(realm).scheme, (urlsplit(realm).hostname or "").lower()
        endpoint = urlsplit(self._endpoint)
        same_host_http = (endpoint.scheme == "http" and scheme == "http"
                          and host == (endpoint.hostname or "").lower())
        if scheme != "https" and not same_host_http:
            raise RegistryError(
                f"{what}: {self._host} names a token realm on plain http at "
                f"{host_of(realm)}; not sending the credentials for {self._host} "
                f"there (a realm must be https, or http on the endpoint's own host)")

    def _token_request(self, method: str, realm: str, *, what: str,
                       policy: retry.Policy = retry.DEFAULT, **kwargs) -> requests.Response:
        response = transport.send(self._session, method, realm, stream=True,
                                  timeout=self._timeout, what=what, policy=policy, **kwargs)
        if response.status_code != 200:
            response.close()  # its body is not read: nothing from it is shown
        if response.status_code in (401, 403):
            raise RegistryError(
                f"{what}: authentication refused by {host_of(realm)} "
                f"({response.status_code}); check the credentials for {self._host}",
                status=response.status_code,
            )
        if response.status_code != 200:
            raise RegistryError(
                f"{what}: token request to {host_of(realm)} failed "
                f"({response.status_code})",
                status=response.status_code,
            )
        return response


def _parse_token(body: bytes, realm: str, what: str) -> tuple[str, float]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    # Some token servers send access_token instead of token (OAuth2 style).
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or len(token) > _MAX_TOKEN or not _TOKEN_RE.fullmatch(token):
        raise RegistryError(f"{what}: {host_of(realm)} sent no usable token")
    expires_in = doc.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) \
            or not 0 < expires_in < 1e9:
        expires_in = _DEFAULT_EXPIRES_IN
    return token, time.monotonic() + max(float(expires_in) - _EXPIRY_MARGIN, 1.0)
