"""Where the registry client sends its requests: an endpoint's URL, TLS, credentials, rewrites.

The client takes these as values and knows no file they came from: config.py builds them
from K3s's registries.yaml and Docker's config.json, push from its --to.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bundler.reference import valid_repository
from bundler.text import quoted

log = logging.getLogger(__name__)

# Seconds to wait for a connection and between bytes of a response; a stalled body ends
# with a timeout rather than hanging a release pipeline.
DEFAULT_TIMEOUT = 30.0
# Requests to one run's registries at once: blob downloads or uploads, images resolved.
DEFAULT_JOBS = 4


@dataclass(frozen=True)
class Credentials:
    """A username/password or an identity (refresh) token; never shown in repr or messages."""

    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class TLSConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class Endpoint:
    """One place to ask for a registry's content: base URL, TLS, credentials, rewrites."""

    url: str  # scheme://host[:port][/path], without the trailing /v2; never with userinfo
    tls: TLSConfig = TLSConfig()
    credentials: Credentials | None = None
    rewrites: tuple[tuple[str, str], ...] = ()
    # K3s (containerd's override_path) takes an endpoint path other than / or /v2 as the
    # whole API root: `https://m/prefix` is asked for `/prefix/<repository>/...`, no /v2.
    override_path: bool = False

    @property
    def api_root(self) -> str:
        """What `<repository>/manifests/...` goes after."""
        return self.url if self.override_path else f"{self.url}/v2"

    @property
    def host(self) -> str:
        """hostname[:port], what credentials and TLS settings are keyed by."""
        return urlsplit(self.url).netloc.rpartition("@")[2]

    def repository(self, repository: str) -> str:
        """The repository name to ask this endpoint for, after K3s-style rewrites.

        As K3s does (Go's Regexp.ReplaceAllString): every match is replaced, `$1`/`${name}`
        naming a group that does not exist gives nothing, and the first pattern that changes
        the name wins, unless the result is not a repository name.
        """
        for pattern, template in self.rewrites:
            regex = re.compile(pattern)
            rewritten = regex.sub(lambda m, t=template: _expand_go(m, t), repository)
            if rewritten != repository:
                if valid_repository(rewritten):
                    return rewritten
                _warn_once(f"rewrite {pattern!r} of {repository} gives {quoted(rewritten)}, "
                           "not a repository name; not used")
        return repository


# Go's template syntax (regexp.Expand): $$, ${name} or $name, a name being ASCII letters,
# digits and underscores.
_GO_REF = re.compile(r"\$(?:(\$)|\{(\w+)\}|(\w+))", re.ASCII)


def _expand_go(match: re.Match, template: str) -> str:
    def one(ref: re.Match) -> str:
        if ref.group(1):
            return "$"
        name = ref.group(2) or ref.group(3)
        try:
            return match.group(int(name) if name.isdigit() else name) or ""
        except IndexError:  # no such group: Go gives the empty string
            return ""

    return _GO_REF.sub(one, template)


# A rewrite that gives no repository name is said once, however many images ask.
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)
