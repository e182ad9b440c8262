"""Image references, parsed once into frozen values and normalized the way Docker does.

`busybox` -> `docker.io/library/busybox:latest`; `rancher/x:1` -> `docker.io/rancher/x:1`;
`name:tag@sha256:<hex>` keeps both, and the digest pins the content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bundler.digest import DIGEST_RE
from bundler.errors import InputError
from bundler.text import quoted

DOCKER_HUB = "docker.io"
# Hosts people write for Docker Hub; all mean docker.io (the API host is set in config.py).
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

# distribution/reference grammar (reference/regexp.go), lower-case path components only.
# Matched with fullmatch (`$` also matches before a trailing newline) and ASCII classes (Go's
# RE2 `\w` is ASCII; Python's is not): a name Docker and containerd refuse is refused here.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?"
)
_TAG_RE = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A normalized image reference: registry, repository, and a tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The full name without tag or digest: `docker.io/rancher/x`."""
        return f"{self.registry}/{self.repository}"

    @property
    def tagged_name(self) -> str | None:
        """`name:tag`, the Docker RepoTag; None for a reference pinned by digest alone."""
        return f"{self.name}:{self.tag}" if self.tag else None

    @property
    def image_name(self) -> str:
        """The name containerd records for the image: `name:tag`, else `name@digest`."""
        return self.tagged_name or f"{self.name}@{self.digest}"

    @property
    def ref(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def parse(text: str) -> Reference:
    """Parse and normalize one reference; raise InputError saying what is wrong with it."""
    s = text.strip()
    if not s:
        raise InputError("empty image reference")
    digest = None
    if "@" in s:
        s, digest = s.split("@", 1)
        if not DIGEST_RE.fullmatch(digest):
            raise InputError(f"invalid digest in {quoted(text)}: want sha256:<64 lower-case hex>")
    tag = None
    slash = s.rfind("/")
    colon = s.rfind(":")
    if colon > slash:
        s, tag = s[:colon], s[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InputError(f"invalid tag {quoted(tag)} in {quoted(text)}")
    registry, repository = _split_domain(s, text)
    if not _PATH_RE.fullmatch(repository):
        raise InputError(
            f"invalid repository name {quoted(repository)} in {quoted(text)} "
            "(lower-case letters, digits and . _ - separators only)"
        )
    if len(f"{registry}/{repository}") > _MAX_NAME:
        raise InputError(f"image name longer than {_MAX_NAME} characters: {quoted(text)}")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)


def valid_repository(name: str) -> bool:
    """Whether `name` is a repository path (`rancher/x`) by the distribution grammar."""
    return bool(_PATH_RE.fullmatch(name)) and len(name) <= _MAX_NAME


def _split_domain(s: str, text: str) -> tuple[str, str]:
    first, sep, rest = s.partition("/")
    # Docker's splitDockerDomain: a dot, a colon or `localhost` makes a host (an IPv6 literal
    # has its colons); anything else, `[ab]` too, is the first path component.
    is_domain = sep and ("." in first or ":" in first or first == "localhost")
    if not is_domain:
        registry, repository = DOCKER_HUB, s
    else:
        if not _DOMAIN_RE.fullmatch(first):
            raise InputError(f"invalid registry host {quoted(first)} in {quoted(text)}")
        registry, repository = first.lower(), rest
    if not repository:
        raise InputError(f"missing repository name in {quoted(text)}")
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    return registry, repository
