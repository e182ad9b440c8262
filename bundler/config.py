"""Where to pull from and with what credentials: K3s's registries.yaml and Docker's config.json.

registries.yaml is read with K3s's meaning (docs.k3s.io "Private Registry Configuration"):
`mirrors.<registry>.endpoint` is tried in order, then the registry itself unless told not to;
`mirrors.<registry>.rewrite` maps repository names on those mirrors; `configs.<host>` gives
auth and TLS for an endpoint host. `*` stands for any registry or host not named.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bundler.errors import EnvironmentFailure, InputError
from bundler.reference import DOCKER_HUB

# Seconds to wait for a connection and between bytes of a response; a stalled body ends
# with a timeout rather than hanging a release pipeline.
DEFAULT_TIMEOUT = 30.0

# Docker Hub's API host; the name `docker.io` itself serves no registry API.
HUB_API = "registry-1.docker.io"
# The key Docker's own `docker login` writes for Docker Hub in config.json.
_HUB_CONFIG_KEY = "https://index.docker.io/v1/"


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

    url: str  # scheme://host[:port][/path], without the trailing /v2
    tls: TLSConfig = TLSConfig()
    credentials: Credentials | None = None
    rewrites: tuple[tuple[str, str], ...] = ()

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def repository(self, repository: str) -> str:
        """The repository name to ask this endpoint for, after K3s-style rewrites."""
        for pattern, replacement in self.rewrites:
            if re.search(pattern, repository):
                return re.sub(pattern, replacement, repository, count=1)
        return repository


@dataclass
class RegistriesConfig:
    """The parsed registries.yaml (empty when none is given)."""

    mirrors: dict[str, dict] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)
    source: str = "registries.yaml"
    default_endpoint: bool = True

    def endpoints(self, registry: str) -> list[Endpoint]:
        """Endpoints for `registry` in the order K3s tries them."""
        mirror = self.mirrors.get(registry) or self.mirrors.get("*") or {}
        # K3s rewrites are Go RE2 patterns; their common subset reads the same in Python.
        rewrites = tuple(
            (str(p), _go_replacement(r)) for p, r in (mirror.get("rewrite") or {}).items()
        )
        out = [self._endpoint(url, rewrites) for url in mirror.get("endpoint") or []]
        default = f"https://{HUB_API if registry == DOCKER_HUB else registry}"
        if (self.default_endpoint or not out) and default not in [e.url for e in out]:
            out.append(self._endpoint(default, ()))
        return out

    def _endpoint(self, url: str, rewrites: tuple[tuple[str, str], ...]) -> Endpoint:
        if "://" not in url:
            url = f"https://{url}"
        parts = urlsplit(url)
        path = parts.path.rstrip("/")
        path = path[: -len("/v2")] if path.endswith("/v2") else path
        base = f"{parts.scheme}://{parts.netloc}{path}"
        host_config = self._host_config(parts.netloc)
        return Endpoint(
            base,
            _tls(host_config.get("tls") or {}, self.source, parts.netloc),
            _auth(host_config.get("auth"), self.source, parts.netloc)
            or docker_credentials(parts.netloc),
            rewrites,
        )

    def _host_config(self, host: str) -> dict:
        names = [host]
        if host == HUB_API:
            names.append(DOCKER_HUB)
        for name in [*names, "*"]:
            if name in self.configs:
                return self.configs[name] or {}
        return {}


def load_registries(path: str | None, default_endpoint: bool = True) -> RegistriesConfig:
    """Read a registries.yaml; None gives the empty configuration (straight to each registry)."""
    if path is None:
        return RegistriesConfig(default_endpoint=default_endpoint)
    import yaml  # imported when used: most builds and every verify never read YAML

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise InputError(f"{path}: no such registries file") from None
    except OSError as e:
        raise EnvironmentFailure(f"{path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise InputError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: want a mapping with `mirrors` and/or `configs`")
    mirrors = _mapping(doc.get("mirrors"), f"{path}: mirrors")
    configs = _mapping(doc.get("configs"), f"{path}: configs")
    for name, mirror in mirrors.items():
        m = _mapping(mirror, f"{path}: mirrors.{name}")
        endpoints = m.get("endpoint") or []
        if not isinstance(endpoints, list) or not all(isinstance(u, str) for u in endpoints):
            raise InputError(f"{path}: mirrors.{name}.endpoint must be a list of URLs")
        for url in endpoints:
            if urlsplit(url if "://" in url else f"https://{url}").scheme not in ("http", "https"):
                raise InputError(f"{path}: mirrors.{name}.endpoint {url!r}: want http:// or https://")
        rewrites = _mapping(m.get("rewrite"), f"{path}: mirrors.{name}.rewrite")
        for pattern in rewrites:
            try:
                re.compile(str(pattern))
            except re.error as e:
                raise InputError(f"{path}: mirrors.{name}.rewrite {pattern!r}: {e}") from None
    for host, conf in configs.items():
        _mapping(conf, f"{path}: configs.{host}")
    return RegistriesConfig(mirrors, configs, str(path), default_endpoint)


def _mapping(value: object, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a mapping")
    return value


def _go_replacement(replacement: str) -> str:
    # Go writes group references as $1 or ${1}; Python as \g<1>.
    return re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", str(replacement).replace("\\", "\\\\"))


def _tls(conf: dict, source: str, host: str) -> TLSConfig:
    tls = TLSConfig(
        conf.get("ca_file"), conf.get("cert_file"), conf.get("key_file"),
        bool(conf.get("insecure_skip_verify", False)),
    )
    for name in ("ca_file", "cert_file", "key_file"):
        value = getattr(tls, name)
        if value and not os.path.isfile(value):
            raise InputError(f"{source}: configs.{host}.tls.{name}: no such file {value}")
    if bool(tls.cert_file) != bool(tls.key_file):
        raise InputError(f"{source}: configs.{host}.tls: cert_file and key_file go together")
    return tls


def _auth(conf: dict | None, source: str, host: str) -> Credentials | None:
    if not conf:
        return None
    if conf.get("identitytoken"):
        return Credentials(identity_token=str(conf["identitytoken"]))
    if conf.get("auth"):
        return _decode_auth(str(conf["auth"]), f"{source}: configs.{host}.auth.auth")
    if conf.get("username") is not None:
        return Credentials(str(conf["username"]), str(conf.get("password") or ""))
    return None


def _decode_auth(value: str, what: str) -> Credentials:
    try:
        user, sep, password = base64.b64decode(value).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        sep = ""
    if not sep:
        raise InputError(f"{what}: not base64 of user:password")
    return Credentials(user, password)


def docker_credentials(host: str) -> Credentials | None:
    """Credentials for `host` from Docker's config.json (auths, credHelpers, credsStore)."""
    config_dir = os.environ.get("DOCKER_CONFIG") or os.path.join(Path.home(), ".docker")
    path = os.path.join(config_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable Docker config ({e})") from None
    keys = [host, _HUB_CONFIG_KEY, DOCKER_HUB, "index.docker.io"] if host == HUB_API else [host]
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _from_helper(helpers[key], key)
    for key, entry in (config.get("auths") or {}).items():
        if _config_host(key) in keys or key in keys:
            if entry.get("identitytoken"):
                return Credentials(identity_token=entry["identitytoken"])
            if entry.get("auth"):
                return _decode_auth(entry["auth"], f"{path}: auths.{key}.auth")
            if entry.get("username"):
                return Credentials(entry["username"], entry.get("password", ""))
    if config.get("credsStore"):
        return _from_helper(config["credsStore"], keys[1] if host == HUB_API else host)
    return None


def _config_host(key: str) -> str:
    return urlsplit(key).netloc if "://" in key else key.rstrip("/")


def _from_helper(helper: str, server: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    if shutil.which(program) is None:
        raise EnvironmentFailure(f"credential helper {program} (from Docker config.json) not found")
    try:
        done = subprocess.run(
            [program, "get"], input=server, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EnvironmentFailure(f"credential helper {program} failed: {e}") from None
    if done.returncode != 0:
        if "credentials not found" in (done.stdout + done.stderr).lower():
            return None
        raise EnvironmentFailure(f"credential helper {program} failed for {server}")
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise EnvironmentFailure(f"credential helper {program} gave no JSON for {server}") from None
    if answer.get("Username") == "<token>":
        return Credentials(identity_token=answer.get("Secret", ""))
    return Credentials(answer.get("Username", ""), answer.get("Secret", ""))
