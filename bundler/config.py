"""Where to pull from and with what credentials: K3s's registries.yaml and Docker's config.json.

registries.yaml is read with K3s's meaning (docs.k3s.io "Private Registry Configuration"; the
keys are those of rancher/wharfie's pkg/registries/types.go, which K3s decodes with
gopkg.in/yaml.v2): `mirrors.<registry>.endpoint` is tried in order, then the registry itself
unless told not to; `mirrors.<registry>.rewrite` maps repository names on those mirrors;
`configs.<host>` gives auth and TLS for an endpoint host. `*` stands for any registry or host
not named.

K3s ignores keys it does not know, so a typo (`endpoints:`) silently sends every pull to the
registry itself; we ignore them too, but say so on stderr. A value of the wrong type makes
yaml.v2, and so K3s, refuse the whole file; so do we, in one line naming the key.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bundler import localfile
from bundler.errors import InputError
from bundler.reference import DOCKER_HUB
from bundler.registry.endpoint import Credentials, Endpoint, TLSConfig

log = logging.getLogger(__name__)

# Docker Hub's API host; the name `docker.io` itself serves no registry API.
HUB_API = "registry-1.docker.io"
# The key Docker's own `docker login` writes for Docker Hub in config.json.
_HUB_CONFIG_KEY = "https://index.docker.io/v1/"

# Real registries.yaml files are a few hundred bytes; anything near this is not one.
MAX_REGISTRIES_YAML = 1 << 20
MAX_DOCKER_CONFIG = 4 << 20
# A credential helper that has not answered in this time is treated as failed.
HELPER_TIMEOUT = 30.0

# The keys K3s reads, level by level (wharfie pkg/registries/types.go, yaml tags).
_TOP_KEYS = ("mirrors", "configs")
_MIRROR_KEYS = ("endpoint", "rewrite")
_CONFIG_KEYS = ("auth", "tls")
_AUTH_KEYS = ("username", "password", "auth", "identity_token")
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "insecure_skip_verify")
# Keys K3s's structs have but whose values K3s never uses: say why they do nothing.
# Registries images are commonly named by: a mirror named close to one of these (or to a host
# under configs) but not exactly is taken for a typo (`docker.oi`), since a mirror applies only
# to images of the very registry it is named by.
_KNOWN_REGISTRIES = ("docker.io", "index.docker.io", "registry-1.docker.io", "quay.io",
                     "ghcr.io", "gcr.io", "k8s.gcr.io", "registry.k8s.io", "public.ecr.aws",
                     "mcr.microsoft.com", "nvcr.io", "registry.gitlab.com",
                     "registry.rancher.com", "registry.suse.com", "docker.elastic.co")
# How alike (difflib's ratio) a mirror's name and a known one must be to be called a typo.
_TYPO_RATIO = 0.8

_UNUSED_KEYS = {
    "auths": "a deprecated containerd key K3s does not use; put credentials under "
             "configs.<host>.auth",
}

_HOST_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


@dataclass(frozen=True)
class HostConfig:
    """`configs.<host>` of registries.yaml, checked."""

    credentials: Credentials | None = None
    tls: TLSConfig = TLSConfig()


@dataclass(frozen=True)
class Mirror:
    """`mirrors.<registry>` of registries.yaml: base URLs (checked, normalized) and rewrites."""

    endpoints: tuple[str, ...] = ()  # API roots (see Endpoint.api_root)
    rewrites: tuple[tuple[str, str], ...] = ()


@dataclass
class RegistriesConfig:
    """The parsed registries.yaml (empty when none is given)."""

    mirrors: dict[str, Mirror] = field(default_factory=dict)
    configs: dict[str, HostConfig] = field(default_factory=dict)
    source: str = "registries.yaml"
    default_endpoint: bool = True
    # Per registry, once: a helper runs once per host and -v lists each registry once.
    _resolved: dict[str, tuple[Endpoint, ...]] = field(
        default_factory=dict, repr=False, compare=False)
    # Images are resolved on several threads: the first to ask for a registry resolves it.
    _resolving: threading.Lock = field(default_factory=threading.Lock, repr=False,
                                       compare=False)

    def endpoints(self, registry: str) -> list[Endpoint]:
        """Endpoints for `registry` in the order K3s tries them."""
        with self._resolving:
            if registry not in self._resolved:
                found = tuple(self._endpoints(registry))
                self._resolved[registry] = found
                log.info("%s: %s", registry, ", then ".join(_described(e) for e in found))
            return list(self._resolved[registry])

    def _endpoints(self, registry: str) -> list[Endpoint]:
        # An entry for the registry itself wins over `*`, even an empty one (as in K3s).
        mirror = self.mirrors[registry] if registry in self.mirrors else self.mirrors.get("*")
        mirror = mirror or Mirror()
        default = _api_root(HUB_API if registry == DOCKER_HUB else registry)
        # K3s: a mirror endpoint equal to the default one is the default, tried without
        # rewrites; --no-default-endpoint applies only to registries with mirrors.
        out = [self._endpoint(root, mirror.rewrites) for root in mirror.endpoints
               if root != default]
        if self.default_endpoint or not out:
            out.append(self._endpoint(default, ()))
        return out

    def _endpoint(self, api_root: str, rewrites: tuple[tuple[str, str], ...]) -> Endpoint:
        host = urlsplit(api_root).netloc
        config = self._host_config(host)
        override = not api_root.endswith("/v2")
        url = api_root if override else api_root[: -len("/v2")]
        return Endpoint(url, config.tls, config.credentials or docker_credentials(host),
                        rewrites, override)

    def _host_config(self, host: str) -> HostConfig:
        names = [host, DOCKER_HUB] if host == HUB_API else [host]
        for name in [*names, "*"]:
            if name in self.configs:
                return self.configs[name]
        return HostConfig()


def _described(endpoint: Endpoint) -> str:
    return f"{endpoint.url} (with rewrites)" if endpoint.rewrites else endpoint.url


def load_registries(path: str | None, default_endpoint: bool = True) -> RegistriesConfig:
    """Read a registries.yaml; None gives the empty configuration (straight to each registry).

    Unknown keys are warnings (K3s ignores them too); wrong types and bad values are an
    InputError naming the file and the key path.
    """
    if path is None:
        return RegistriesConfig(default_endpoint=default_endpoint)
    doc = _read_yaml(str(path))
    checker = _Checker(str(path))
    mirrors, configs = checker.document(doc)
    return RegistriesConfig(mirrors, configs, str(path), default_endpoint)


def _read_yaml(path: str) -> object:
    import yaml  # imported when used: most builds and every verify never read YAML

    text = localfile.read_text(path, MAX_REGISTRIES_YAML, "registries file",
                               "a registries file")
    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        position = getattr(e, "position", None)  # a reader error: a character YAML forbids
        if mark:
            where = f"{path}:{mark.line + 1}"
        elif isinstance(position, int):
            where = f"{path}:{text.count(chr(10), 0, position) + 1}"
        else:
            where = path
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or "unreadable"
        character = getattr(e, "character", None)  # a code point
        if isinstance(character, int):
            problem = f"character #x{character:04x}: {problem}"
        raise InputError(f"{where}: not valid YAML ({problem})") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply to be a registries.yaml") from None


class _Text(str):
    """A plain scalar that YAML would read as a number, date or boolean, kept as written.

    yaml.v2 fills a string field with the scalar's text, so `password: 0123` is "0123" to
    K3s; PyYAML would make it the integer 83.
    """

    truth: bool | None = None


_LOADER = None


def _loader():
    global _LOADER
    if _LOADER is None:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        def as_text(loader, node):
            return _Text(loader.construct_scalar(node))

        def as_bool(loader, node):
            text = _Text(loader.construct_scalar(node))
            text.truth = yaml.SafeLoader.construct_yaml_bool(loader, node)
            return text

        for tag in ("int", "float", "timestamp"):
            Loader.add_constructor(f"tag:yaml.org,2002:{tag}", as_text)
        Loader.add_constructor("tag:yaml.org,2002:bool", as_bool)
        _LOADER = Loader
    return _LOADER


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, _Text) and value.truth is not None:
        return "true/false"
    if isinstance(value, _Text):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "null" if value is None else f"a {type(value).__name__}"


class _Checker:
    """Walks a registries.yaml document the way K3s decodes it, naming key paths."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str) -> InputError:
        return InputError(f"{self.source}: {where}: {problem}" if where
                          else f"{self.source}: {problem}")

    def document(self, doc: object) -> tuple[dict[str, Mirror], dict[str, HostConfig]]:
        if doc is None:
            return {}, {}
        if not isinstance(doc, dict):
            raise self.fail("", f"want a mapping with `mirrors` and/or `configs`, "
                                f"got {_kind(doc)}")
        top = self.mapping(doc, "")
        self.known(top, _TOP_KEYS, "")
        mirrors = {name: self.mirror(m, f"mirrors.{name}")
                   for name, m in self.mapping(top.get("mirrors"), "mirrors").items()}
        configs = {host: self.host_config(c, f"configs.{host}")
                   for host, c in self.mapping(top.get("configs"), "configs").items()}
        for name in mirrors:
            self.registry_name(name, tuple(configs))
        return mirrors, configs

    def registry_name(self, name: str, configured: tuple[str, ...]) -> None:
        """Warn of a mirror named almost, but not quite, like a known or configured
        registry: K3s takes any name, and a misspelt one silently mirrors nothing."""
        known = (*_KNOWN_REGISTRIES, *configured)
        if name == "*" or "://" in name or name.lower() in known:
            return
        import difflib  # here: only a name that is no known registry needs it

        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=_TYPO_RATIO)
        if close:
            log.warning("%s: mirrors.%s: no registry is named so here; did you mean '%s'? "
                        "(a mirror applies only to images of the registry it is named by)",
                        self.source, name, close[0])

    def mapping(self, value: object, where: str) -> dict[str, object]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"want a mapping, got {_kind(value)}")
        for key in value:
            if not isinstance(key, str) or not key:
                raise self.fail(where, f"key {key!r}: want a name")
        return {str(k): v for k, v in value.items()}

    def known(self, value: dict[str, object], keys: tuple[str, ...], where: str) -> None:
        for key in value:
            if key in keys:
                continue
            path = f"{where}.{key}" if where else key
            if not where and key in _UNUSED_KEYS:
                log.warning("%s: %s: ignored: %s", self.source, path, _UNUSED_KEYS[key])
                continue
            hint = _close_match(key, keys)
            log.warning("%s: %s: unknown key, ignored (as K3s does)%s", self.source, path,
                        f"; did you mean '{hint}'?" if hint else f"; known here: {', '.join(keys)}")

    def string(self, value: object, where: str) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(where, f"want text, got {_kind(value)}")
        return str(value)

    def mirror(self, value: object, where: str) -> Mirror:
        if "://" in where:
            log.warning("%s: %s: a mirror is named by its registry (docker.io, "
                        "registry.example.com:5000), not a URL: this one matches no image",
                        self.source, where)
        m = self.mapping(value, where)
        self.known(m, _MIRROR_KEYS, where)
        urls = m.get("endpoint")
        if urls is None:
            urls = []
        if not isinstance(urls, list):
            raise self.fail(f"{where}.endpoint", f"want a list of URLs, got {_kind(urls)} "
                            "(K3s refuses this file too); write endpoint: [\"https://...\"]")
        endpoints = []
        for i, url in enumerate(urls):
            what = f"{where}.endpoint[{i}]"
            text = self.string(url, what)
            if text is None:
                raise self.fail(what, "empty URL")
            endpoints.append(self.endpoint_url(text, what))
        rewrites = []
        for pattern, replacement in self.mapping(m.get("rewrite"), f"{where}.rewrite").items():
            what = f"{where}.rewrite.{pattern}"
            try:
                re.compile(pattern)
            except re.error as e:
                raise self.fail(what, f"not a regular expression ({e})") from None
            rewrites.append((pattern, self.string(replacement, what) or ""))
        return Mirror(tuple(dict.fromkeys(endpoints)), tuple(rewrites))

    def endpoint_url(self, url: str, where: str) -> str:
        # The URL is echoed in messages only once it is known to carry no userinfo.
        if "@" in url:
            raise self.fail(where, "credentials in endpoint URLs are not supported; put them "
                                   "under configs.<host>.auth")
        try:
            return _api_root(url)
        except ValueError as e:
            raise self.fail(where, f"{url!r}: {e}") from None

    def host_config(self, value: object, where: str) -> HostConfig:
        c = self.mapping(value, where)
        self.known(c, _CONFIG_KEYS, where)
        credentials = self.auth(c.get("auth"), f"{where}.auth")
        return HostConfig(credentials, self.tls(c.get("tls"), f"{where}.tls"))

    def auth(self, value: object, where: str) -> Credentials | None:
        a = self.mapping(value, where)
        self.known(a, _AUTH_KEYS, where)
        fields = {k: self.string(a.get(k), f"{where}.{k}") for k in _AUTH_KEYS}
        # The order go-containerregistry's authn uses: a token, then auth, then the pair.
        if fields["identity_token"]:
            return Credentials(identity_token=fields["identity_token"])
        if fields["auth"]:
            return _decode_auth(fields["auth"], f"{self.source}: {where}.auth")
        if fields["username"] is not None or fields["password"] is not None:
            return Credentials(fields["username"] or "", fields["password"] or "")
        return None

    def tls(self, value: object, where: str) -> TLSConfig:
        t = self.mapping(value, where)
        self.known(t, _TLS_KEYS, where)
        files = {k: self.string(t.get(k), f"{where}.{k}") for k in _TLS_KEYS[:3]}
        for name, path in files.items():
            if path and not os.path.isfile(path):
                raise self.fail(f"{where}.{name}", f"no such file {path}")
        if bool(files["cert_file"]) != bool(files["key_file"]):
            raise self.fail(where, "cert_file and key_file go together")
        skip = t.get("insecure_skip_verify")
        if skip is not None and not (isinstance(skip, _Text) and skip.truth is not None):
            # yaml.v2 refuses "false" (quoted) for a bool; so do we, rather than read it as
            # a non-empty, so true, string.
            raise self.fail(f"{where}.insecure_skip_verify",
                            f"want true or false, got {_kind(skip)}")
        return TLSConfig(files["ca_file"], files["cert_file"], files["key_file"],
                         bool(skip is not None and skip.truth))


def _close_match(key: str, keys: tuple[str, ...]) -> str | None:
    import difflib  # here: only a misspelt key needs it, and every build loads this module

    close = difflib.get_close_matches(key.lower(), keys, n=1)
    if close:
        return close[0]
    # Shortened keys (`ca`, `insecure`, `token`) are too short for difflib's ratio.
    partial = [k for k in keys if len(key) >= 2 and (k.startswith(key) or k.endswith(key))]
    return partial[0] if len(partial) == 1 else None


def _api_root(url: str) -> str:
    """The API root of an endpoint as K3s reads it (k3s pkg/agent/containerd
    normalizeEndpointAddress): no scheme means https, but http for localhost on a port other
    than 443; no path, / or /v2 mean scheme://host/v2, any other path is the root itself
    (override_path). ValueError says what is wrong."""
    if any(c in url for c in "?#"):
        raise ValueError("a query or fragment has no meaning in an endpoint URL")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("spaces or control characters in the URL")
    parts = urlsplit(url if "://" in url else f"//{url}")
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port is not a number from 0 to 65535") from None
    if not _valid_host(parts.hostname or ""):
        raise ValueError("want scheme://host[:port][/path]")
    if not scheme:
        scheme = "http" if _is_localhost(parts.hostname or "") and port not in (None, 443) \
            else "https"
    if scheme not in ("http", "https"):
        raise ValueError("want http:// or https://")
    host = parts.netloc.lower()
    path = "/v2" if parts.path in ("", "/", "/v2") else parts.path.rstrip("/")
    return f"{scheme}://{host}{path}"


def _valid_host(host: str) -> bool:
    if ":" in host:  # urlsplit took the brackets off an IPv6 literal
        try:
            return ipaddress.ip_address(host).version == 6
        except ValueError:
            return False
    return bool(_HOST_RE.fullmatch(host))


def _is_localhost(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _decode_auth(value: str, what: str) -> Credentials:
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        sep = ""
    if not sep:
        raise InputError(f"{what}: not base64 of user:password")
    return Credentials(user, password)


# Docker config problems are said once per file and message, however many hosts ask.
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def docker_credentials(host: str) -> Credentials | None:
    """Credentials for `host` from Docker's config.json (auths, credHelpers, credsStore).

    As with the docker CLI, a config that cannot be read or understood, or a credential helper
    that fails, is a warning: the pull goes on without credentials (anonymous pulls work on
    most public registries; a private one then answers 401, which names the host).
    """
    config_dir = os.environ.get("DOCKER_CONFIG") or os.path.join(Path.home(), ".docker")
    path = os.path.join(config_dir, "config.json")
    config = _docker_config(path)
    if config is None:
        return None
    keys = [host, _HUB_CONFIG_KEY, DOCKER_HUB, "index.docker.io"] if host == HUB_API else [host]
    helpers = config.get("credHelpers")
    helpers = helpers if isinstance(helpers, dict) else {}
    for key in keys:
        if isinstance(helpers.get(key), str) and helpers[key]:
            return _from_helper(helpers[key], key)
    auths = config.get("auths")
    for key, entry in (auths if isinstance(auths, dict) else {}).items():
        if not (_config_host(key) in keys or key in keys):
            continue
        if not isinstance(entry, dict):
            _warn_once(f"{path}: auths.{key}: not an object; ignored")
            continue
        found = _from_auths_entry(entry, f"{path}: auths.{key}")
        if found:
            return found
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return _from_helper(store, keys[1] if host == HUB_API else host)
    return None


def _docker_config(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DOCKER_CONFIG + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        _warn_once(f"{path}: cannot read the Docker config ({e.strerror}); going on without "
                   "its credentials")
        return None
    if len(data) > MAX_DOCKER_CONFIG:
        problem = f"larger than {MAX_DOCKER_CONFIG >> 20} MiB"
    else:
        try:
            config = json.loads(data)
        except (ValueError, RecursionError) as e:
            # json's message names a line and column, never the content.
            problem = f"not JSON ({e})" if isinstance(e, ValueError) else "nested too deeply"
        else:
            if isinstance(config, dict):
                return config
            problem = "not a JSON object"
    _warn_once(f"{path}: Docker config is {problem}; going on without its credentials")
    return None


def _from_auths_entry(entry: dict, what: str) -> Credentials | None:
    def text(key: str) -> str:
        value = entry.get(key)
        return value if isinstance(value, str) else ""

    if text("identitytoken"):
        return Credentials(identity_token=text("identitytoken"))
    if text("auth"):
        try:
            return _decode_auth(text("auth"), what + ".auth")
        except InputError as e:
            _warn_once(f"{e}; ignored")
            return None
    if text("username"):
        return Credentials(text("username"), text("password"))
    return None


def _config_host(key: str) -> str:
    return urlsplit(key).netloc if "://" in key else key.rstrip("/")


def _from_helper(helper: str, server: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get`; on any failure warn and go anonymous. Its output
    is never quoted: a helper that failed half-way may have printed a secret."""
    import subprocess  # here: most runs ask no helper, and every build loads this module

    program = f"docker-credential-{helper}"
    if not re.fullmatch(r"[A-Za-z0-9._-]+", helper) or shutil.which(program) is None:
        _warn_once(f"credential helper {program} (from Docker config.json) not found; "
                   f"going on without credentials for {server}")
        return None
    try:
        done = subprocess.run([program, "get"], input=server, capture_output=True, text=True,
                              timeout=HELPER_TIMEOUT, errors="replace")
    except subprocess.TimeoutExpired:
        return _helper_failed(program, server, f"no answer in {HELPER_TIMEOUT:g} s")
    except OSError as e:
        return _helper_failed(program, server, e.strerror or type(e).__name__)
    if done.returncode != 0:
        if "credentials not found" in (done.stdout + done.stderr).lower():
            return None
        return _helper_failed(program, server, f"exit status {done.returncode}")
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        return _helper_failed(program, server, "its answer is not JSON")
    if not isinstance(answer, dict) or not all(
            isinstance(answer.get(k, ""), str) for k in ("Username", "Secret")):
        return _helper_failed(program, server, "its answer is not a Username/Secret object")
    if answer.get("Username") == "<token>":
        return Credentials(identity_token=answer.get("Secret", ""))
    return Credentials(answer.get("Username", ""), answer.get("Secret", ""))


def _helper_failed(program: str, server: str, why: str) -> None:
    _warn_once(f"credential helper {program} failed for {server} ({why}); going on without "
               "credentials")
    return None
