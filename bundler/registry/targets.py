"""Where a request may go, and how a URL may be named: origins, redaction, target checks.

Every URL a registry hands us (a redirect, a token realm, an upload location) passes
check_target before we send anything there; messages name URLs only through redact/host_of,
so no userinfo or signed query reaches the user's terminal or CI log.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit, urlunsplit

from bundler.errors import RegistryError


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
    """The URL with any user:password@ removed, so requests never turns it into a header.
    One urlsplit cannot parse is returned as it is: check_target refuses it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query,
                       parts.fragment))


def check_target(url: str, registry_url: str, what: str, why: str,
                 came_from: str | None = None) -> None:
    """Refuse to send a request the registry chose (a redirect, a token realm) where it must
    not go, as a RegistryError naming the registry and the target host:

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
    try:
        scheme = urlsplit(url).scheme
    except ValueError:  # urlsplit's own refusals ("Invalid IPv6 URL")
        raise RegistryError(f"{what}: {registry} {why} a malformed URL; refused") from None
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



def reason(e: BaseException) -> str:
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
