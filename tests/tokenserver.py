"""A token issuer for distribution's `auth: token` (the Docker Hub flow), run by the tests.

It answers GET /token?service=..&scope=.. with {"token": JWT, "expires_in": N}; the JWT is
signed RS256 by a test key whose self-signed cert rides in the header as x5c. With a username
set it demands that Basic login; it grants pull on whatever scope it is asked.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from tests import pki
from tests.httpreply import cut_off, handler, reply

SERVICE, ISSUER = "test-registry", "test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    def __init__(self, directory: Path, username: str = "", password: str = "",
                 expires_in: int = 300, cut_first: int = 0):
        self.key = pki.key()
        self.cert = pki.certificate(self.key, "token signer")
        self.cert_path = pki.write_pem(directory / "token-cert.pem", self.cert)
        self.username, self.password, self.expires_in = username, password, expires_in
        # The first `cut_first` token responses break off halfway (a connection reset).
        self.cut_first = cut_first
        self.requests: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler(self._answer, "GET"))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        parsed = parse_qs(urlsplit(h.path).query)
        query = {k: v[0] for k, v in parsed.items()}
        # Repeated scope parameters ask for all of them (distribution's token spec).
        query["scope"] = " ".join(parsed.get("scope", []))
        auth = h.headers.get("Authorization", "")
        self.requests.append({"query": query, "authorization": auth})
        if self.username:
            want = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if auth != want:
                reply(h, 401)
                return
        body = json.dumps({"token": self.token(query.get("scope", "")),
                           "expires_in": self.expires_in}).encode()
        headers = {"Content-Type": "application/json"}
        if len(self.requests) <= self.cut_first:
            cut_off(h, body, len(body) // 2, headers, reset=True)
        else:
            reply(h, 200, body, headers)

    def token(self, scope: str) -> str:
        access = []
        for item in scope.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": self.username or "anonymous", "aud": SERVICE,
                  "exp": now + self.expires_in, "nbf": now - 10, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(sig)}"

    def registry_config(self) -> str:
        return (f"auth:\n  token: {{realm: \"{self.url}\", service: {SERVICE}, "
                f"issuer: {ISSUER}, rootcertbundle: {self.cert_path}}}\n")

    def start(self) -> TokenServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
