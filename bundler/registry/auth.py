"""Registry authentication: Basic, and the Bearer token flow of the distribution token spec.

On a 401 the registry's WWW-Authenticate challenge says what to do; we answer it once per
scope and cache the token until shortly before it expires.
"""

from __future__ import annotations

import base64
import re
import time

import requests

from bundler.config import Credentials
from bundler.errors import RegistryError
from bundler.registry import transport

_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
# Renew a token this many seconds before the registry says it expires.
_EXPIRY_MARGIN = 10
# The token spec's default lifetime when expires_in is absent.
_DEFAULT_EXPIRES_IN = 60


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split `Bearer realm="...",service="..."` into ("bearer", {realm:..., service:...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM_RE.finditer(rest)}
    return scheme.lower(), params


class Authenticator:
    """Supplies the Authorization header for one registry host, per pull scope."""

    def __init__(self, session: requests.Session, host: str, credentials: Credentials | None):
        self._session = session
        self._host = host
        self._credentials = credentials
        self._scheme: str | None = None
        self._tokens: dict[str, tuple[str, float]] = {}

    def authorization(self, scope: str) -> str | None:
        """The header value to send for `scope`, if we know one."""
        if self._scheme == "basic":
            return self._basic()
        token = self._tokens.get(scope)
        if token and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        return None

    def answer(self, response: requests.Response, scope: str, what: str) -> bool:
        """Handle a 401 challenge; True if a retry with new credentials makes sense."""
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self._credentials is None or self._scheme == "basic":
                return False
            self._scheme = "basic"
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        self._tokens[scope] = self._fetch_token(params, scope, what)
        return True

    def _basic(self) -> str:
        c = self._credentials
        assert c is not None
        raw = f"{c.username}:{c.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _fetch_token(self, params: dict[str, str], scope: str, what: str) -> tuple[str, float]:
        realm = params["realm"]
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        c = self._credentials
        if c and c.identity_token:
            # An identity token is an OAuth2 refresh token (distribution docs, oauth.md).
            form = {**query, "grant_type": "refresh_token", "refresh_token": c.identity_token,
                    "client_id": "bundler"}
            response = self._token_request("POST", realm, data=form, what=what)
        else:
            auth = (c.username, c.password) if c and c.username else None
            response = self._token_request("GET", realm, params=query, auth=auth, what=what)
        try:
            body = response.json()
        except ValueError:
            body = {}
        # Some token servers send access_token instead of token (OAuth2 style).
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"{what}: token server {transport.redact(realm)} sent no token")
        expires_in = body.get("expires_in") or _DEFAULT_EXPIRES_IN
        return token, time.monotonic() + max(float(expires_in) - _EXPIRY_MARGIN, 1.0)

    def _token_request(self, method: str, realm: str, *, what: str, **kwargs) -> requests.Response:
        response = transport.send(self._session, method, realm, **kwargs)
        if response.status_code in (401, 403):
            raise RegistryError(
                f"{what}: authentication refused by {transport.redact(realm)} "
                f"({response.status_code}); check the credentials for {self._host}",
                status=response.status_code,
            )
        if response.status_code != 200:
            raise RegistryError(
                f"{what}: token request to {transport.redact(realm)} failed "
                f"({response.status_code})",
                status=response.status_code,
            )
        return response
