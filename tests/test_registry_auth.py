"""Registry auth against real registries: distribution's token auth, and htpasswd over TLS."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from tests import imagegen as gen
from tests import pki, registries
from tests.cli_helpers import assert_one_line_error, build_args, bundler
from tests.httpreply import handler, reply, serve
from tests.registryseed import push_image
from tests.servers import Registry, login, write_registries_yaml
from tests.tokenserver import SERVICE, TokenServer

USER, PASSWORD = "puller", "s3cret-Passw0rd"


@pytest.fixture(scope="module")
def seeded_data(tmp_path_factory) -> Path:
    """Registry storage holding docker.io/library/busybox:1.36.1, seeded without auth."""
    directory = tmp_path_factory.mktemp("authdata")
    plain = Registry(directory / "plain", data=directory / "data").start()
    try:
        push_image(plain.url, "library/busybox", gen.image([gen.tar_layer(gen.random_files(9))]),
                   "1.36.1")
    finally:
        plain.stop()
    return directory / "data"


def _build(tmp: Path, registries: Path, env: dict | None = None):
    return bundler(*build_args(None, tmp, ["busybox:1.36.1"], registries=registries,
                               cache=False), env=env)


@pytest.fixture
def bearer_registry(tmp_path, seeded_data):
    """Starts registries.token_registry over the seeded data: bearer_registry(**token options)
    -> (tokens, registry); each stops with the test."""
    with contextlib.ExitStack() as stack:
        yield lambda **kwargs: stack.enter_context(
            registries.token_registry(tmp_path, seeded_data, **kwargs))


def test_anonymous_bearer_token(tmp_path, bearer_registry):
    tokens, registry = bearer_registry()
    yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [registry.url]})
    run = _build(tmp_path, yaml)
    assert run.code == 0, run.stderr
    assert tokens.requests, "no token was requested"
    query = tokens.requests[0]["query"]
    assert query == {"scope": "repository:library/busybox:pull", "service": SERVICE}
    assert tokens.requests[0]["authorization"] == ""
    # Cached per scope: one token for manifest, config and layer requests.
    assert len(tokens.requests) == 1


def test_bearer_token_with_registries_yaml_credentials(tmp_path, bearer_registry):
    tokens, registry = bearer_registry(username=USER, password=PASSWORD)
    yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [registry.url]},
                                 login(registry.host, USER, PASSWORD))
    run = _build(tmp_path, yaml)
    assert run.code == 0, run.stderr
    assert tokens.requests[0]["authorization"].startswith("Basic ")


def test_bearer_token_with_docker_config_credentials(tmp_path, bearer_registry):
    tokens, registry = bearer_registry(username=USER, password=PASSWORD)
    yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [registry.url]})
    docker = tmp_path / "docker"
    docker.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    run = _build(tmp_path, yaml, env={"DOCKER_CONFIG": str(docker)})
    assert run.code == 0, run.stderr


def test_wrong_password_is_one_line_and_secret_free(tmp_path, bearer_registry):
    tokens, registry = bearer_registry(username=USER, password=PASSWORD)
    yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [registry.url]},
                                 login(registry.host, USER, "wrong-pass"))
    run = _build(tmp_path, yaml)
    assert_one_line_error(run, "docker.io/library/busybox:1.36.1", "authentication refused")
    assert "wrong-pass" not in run.stderr + run.stdout
    assert not (tmp_path / "dist").exists()


@pytest.fixture
def basic_registry(tmp_path, seeded_data):
    """registries.htpasswd_registry over the seeded data, taking USER:PASSWORD: (registry, CA)."""
    with registries.htpasswd_registry(tmp_path, USER, PASSWORD, seeded_data) as (registry, ca):
        yield registry, ca


def test_basic_auth_over_tls_with_ca_file(tmp_path, basic_registry):
    registry, ca = basic_registry
    yaml = write_registries_yaml(
        tmp_path / "r.yaml", {"docker.io": [registry.url]},
        login(registry.host, USER, PASSWORD, ca))
    run = _build(tmp_path, yaml)
    assert run.code == 0, run.stderr


def test_tls_without_ca_fails_clearly(tmp_path, basic_registry):
    registry, _ = basic_registry
    yaml = write_registries_yaml(
        tmp_path / "r.yaml", {"docker.io": [registry.url]},
        login(registry.host, USER, PASSWORD))
    run = _build(tmp_path, yaml)
    assert_one_line_error(run, "TLS", registry.host)
    assert run.code == 3


def test_basic_auth_missing_credentials_is_denied(tmp_path, basic_registry):
    registry, ca = basic_registry
    yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [registry.url]},
                                 {registry.host: {"tls": {"ca_file": str(ca)}}})
    run = _build(tmp_path, yaml, env={"DOCKER_CONFIG": str(tmp_path / "none")})
    assert_one_line_error(run, "docker.io/library/busybox:1.36.1", "access denied")
    assert run.code == 1


def test_expired_token_is_fetched_again(tmp_path, bearer_registry):
    import time

    from bundler.registry.client import Client
    from bundler.registry.endpoint import Endpoint

    # expires_in 11 s minus the 10 s safety margin: the token is good for one second.
    tokens, registry = bearer_registry(expires_in=11)
    client = Client(Endpoint(registry.url))
    client.manifest("library/busybox", "1.36.1", "busybox")
    client.manifest("library/busybox", "1.36.1", "busybox")
    assert len(tokens.requests) == 1  # cached while valid
    time.sleep(1.2)
    client.manifest("library/busybox", "1.36.1", "busybox")
    assert len(tokens.requests) == 2


def test_token_and_head_cut_off_are_retried_on_the_same_endpoint(tmp_path, seeded_data):
    """A token response and a HEAD broken off mid-way are retried there.
    The token is cut in the cold build, the HEAD in the rebuild (a cold build asks for no
    digest first: nothing it could find in an empty cache)."""
    import socket

    from tests.faultproxy import RegistryFront

    tokens = TokenServer(tmp_path, cut_first=1).start()
    registry = Registry(tmp_path / "reg", tokens.registry_config(), data=seeded_data).start()
    heads = []

    def reset_first_head(h, server):
        if h.command != "HEAD" or heads:
            return False
        heads.append(h.path)
        h.connection.shutdown(socket.SHUT_RDWR)  # no status line at all
        h.close_connection = True
        return True

    front = RegistryFront(registry.url, fault=reset_first_head)
    fallback = RegistryFront(registry.url)
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml",
                                     {"docker.io": [front.url, fallback.url]})
        args = build_args(None, tmp_path, ["busybox:1.36.1"], registries=yaml)
        cold = bundler("-v", *args)
        assert cold.code == 0, cold.stderr
        assert not heads and len(tokens.requests) == 2, tokens.requests
        warm = bundler("-v", *args)
    finally:
        for server in (front, fallback, registry, tokens):
            server.stop()
    assert warm.code == 0, warm.stderr
    assert heads and len(tokens.requests) == 3, tokens.requests
    assert fallback.requests == []


def _kept(tmp_path: Path) -> dict:
    kept = tmp_path / "cache" / "challenges.json"
    return json.loads(kept.read_text()) if kept.exists() else {}


def test_a_rebuild_asks_for_its_token_without_a_401_first(tmp_path, bearer_registry):
    """An anonymous registry's Bearer challenge is kept in the cache, so a rebuild
    is a token and one HEAD, not a 401, a token and a HEAD."""
    from tests.faultproxy import RegistryFront

    tokens, registry = bearer_registry()
    front = RegistryFront(registry.url)
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]})
        args = build_args(None, tmp_path, ["busybox:1.36.1"], registries=yaml)
        cold = bundler(*args)
        assert cold.code == 0, cold.stderr
        asked = len(front.requests)
        assert front.requests[0][2] == ""  # the cold build met the challenge (a 401)
        assert _kept(tmp_path) == {front.url: {"realm": tokens.url, "service": SERVICE}}
        warm = bundler(*args)
    finally:
        front.stop()
    assert warm.code == 0, warm.stderr
    again = front.requests[asked:]
    assert [(path, auth.split()[0]) for _, path, auth in again] == [
        ("/v2/library/busybox/manifests/1.36.1", "Bearer")]
    assert len(tokens.requests) == 2  # one each run: tokens themselves are never kept


def test_a_kept_realm_that_is_gone_costs_a_401_not_the_build(tmp_path, bearer_registry):
    from tests.servers import free_port

    tokens, registry = bearer_registry()
    yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [registry.url]})
    args = build_args(None, tmp_path, ["busybox:1.36.1"], registries=yaml)
    assert bundler(*args).code == 0
    live = {registry.url: {"realm": tokens.url, "service": SERVICE}}
    assert _kept(tmp_path) == live
    gone = f"http://127.0.0.1:{free_port()}/token"  # nothing listens there
    (tmp_path / "cache" / "challenges.json").write_text(
        json.dumps({registry.url: {"realm": gone, "service": SERVICE}}))
    dead = subprocess.Popen(["true"])  # its pid names a process that is gone
    dead.wait()
    stale = tmp_path / "cache" / f".challenges.json.{dead.pid}-deadbeef.partial"
    stale.write_text("{")  # what a run killed while writing the file leaves
    run = bundler(*args)
    assert run.code == 0, run.stderr
    assert _kept(tmp_path) == live
    assert not stale.exists()
    # A damaged file is no hint at all, never a failure.
    (tmp_path / "cache" / "challenges.json").write_text("{not json")
    run = bundler(*args)
    assert run.code == 0, run.stderr
    assert _kept(tmp_path) == live


def test_no_challenge_is_kept_or_used_with_credentials(tmp_path, bearer_registry):
    # A kept realm is not the registry's word in this run: credentials never go where it
    # points, so one is neither written nor read for a registry with credentials.
    tokens, registry = bearer_registry(username=USER, password=PASSWORD)
    yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [registry.url]},
                                 login(registry.host, USER, PASSWORD))
    args = build_args(None, tmp_path, ["busybox:1.36.1"], registries=yaml)
    assert bundler(*args).code == 0
    assert _kept(tmp_path) == {}
    (tmp_path / "planted").mkdir()
    planted = TokenServer(tmp_path / "planted").start()  # grants anything it is asked
    try:
        (tmp_path / "cache" / "challenges.json").write_text(
            json.dumps({registry.url: {"realm": planted.url, "service": SERVICE}}))
        before = len(tokens.requests)
        run = bundler(*args)
    finally:
        planted.stop()
    assert run.code == 0, run.stderr
    assert planted.requests == []
    assert [r["authorization"].split()[0] for r in tokens.requests[before:]] == ["Basic"]


def test_tls_connections_share_one_context_with_the_cas_loaded_once(tmp_path, basic_registry):
    """urllib3 loads the CA file into every new connection (certifi's bundle is
    ~17 ms of CPU each); one endpoint's connections share one context, loaded once, and still
    verify: a registry whose CA is not the configured one fails."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from bundler.errors import NetworkError
    from bundler.registry.client import Client
    from bundler.registry.endpoint import Credentials, Endpoint, TLSConfig

    registry, ca = basic_registry
    endpoint = Endpoint(registry.url, TLSConfig(ca_file=str(ca)), Credentials(USER, PASSWORD))
    client = Client(endpoint, pool=4)
    barrier = threading.Barrier(4)

    def fetch(_):
        barrier.wait()  # four requests at once: four connections
        return client.manifest("library/busybox", "1.36.1", "busybox")[2]

    with ThreadPoolExecutor(4) as pool:
        assert len(set(pool.map(fetch, range(4)))) == 1
    adapter = client._session.get_adapter(registry.url)
    pools = list(adapter.poolmanager.pools._container.values())
    connections = [c for p in pools for c in list(p.pool.queue) if c is not None]
    assert len(connections) >= 2
    assert {id(c.ssl_context) for c in connections} == {id(adapter._context)}
    assert all(c.ca_certs is None and c.ca_cert_dir is None for c in connections)

    (tmp_path / "other").mkdir()
    other, _, _ = pki.server_tls(tmp_path / "other")  # a CA that signed nothing here
    stranger = Client(Endpoint(registry.url, TLSConfig(ca_file=str(other)),
                               Credentials(USER, PASSWORD)))
    with pytest.raises(NetworkError, match="TLS failed"):
        stranger.manifest("library/busybox", "1.36.1", "busybox")


def _client(registry, credentials: bool = True, tls=None):
    from bundler.config import Credentials, Endpoint, TLSConfig
    from bundler.registry.client import Client

    return Client(Endpoint(registry.url, TLSConfig(ca_file=str(tls)) if tls else TLSConfig(),
                           Credentials(USER, PASSWORD) if credentials else None), timeout=10)


@pytest.mark.parametrize("tail", [" x", "\"", ",x", "\u00e9", "\t", "=x", ";", "\x7f"])
def test_a_token_with_a_bad_character_after_good_ones_is_refused(bearer_registry, tail):
    # The whole token must be of the header's token68 charset, not just its start: it goes
    # into an Authorization header as it is.
    from bundler.errors import RegistryError

    tokens, registry = bearer_registry()
    plain = tokens.token
    tokens.token = lambda scope: plain(scope) + tail
    with pytest.raises(RegistryError, match="^busybox: token from 127.0.0.1:[0-9]+: .* sent "
                                            "no usable token$"):
        _client(registry, credentials=False).manifest("library/busybox", "1.36.1", "busybox")
    assert len(tokens.requests) == 1


def test_a_token_of_the_whole_charset_with_padding_is_used(bearer_registry):
    # Refused by the registry (it is no JWT), but sent: our side took it.
    from bundler.errors import RegistryError

    tokens, registry = bearer_registry()
    sent = "AZaz09-._~+/" + "=="
    tokens.token = lambda scope: sent
    with pytest.raises(RegistryError) as e:
        _client(registry, credentials=False).manifest("library/busybox", "1.36.1", "busybox")
    assert "usable token" not in str(e.value)


def test_credentials_go_to_a_plain_http_realm_only_on_the_endpoints_own_host(tmp_path,
                                                                              bearer_registry):
    """The realm-host rule: with credentials, an http realm must be on the http endpoint's own
    host name; `localhost` is this machine too, but not the host the endpoint was named by."""
    from bundler.errors import RegistryError

    tokens, registry = bearer_registry(realm_host="localhost", username=USER, password=PASSWORD)
    with pytest.raises(RegistryError) as e:
        _client(registry).manifest("library/busybox", "1.36.1", "busybox")
    assert str(e.value).startswith("busybox: ") and "names a token realm on plain http at " \
        "localhost:" in str(e.value) and "not sending the credentials" in str(e.value)
    assert PASSWORD not in str(e.value)
    assert tokens.requests == []
    # The same realm is used without credentials (nothing secret to send): the refusal above
    # is the rule's, not an unreachable realm's.
    tokens.username = ""
    _client(registry, credentials=False).manifest("library/busybox", "1.36.1", "busybox")
    assert [r["authorization"] for r in tokens.requests] == [""]


def test_credentials_never_go_to_a_plain_http_realm_from_an_https_endpoint(tmp_path,
                                                                           seeded_data):
    # Same host name, but the endpoint was configured as https: the credentials were
    # promised encryption.
    from bundler.errors import RegistryError

    ca, cert, key = pki.server_tls(tmp_path)
    tokens = TokenServer(tmp_path, username=USER, password=PASSWORD).start()
    registry = Registry(tmp_path / "reg", tokens.registry_config(), data=seeded_data,
                        tls=(cert, key)).start(verify=str(ca))
    try:
        with pytest.raises(RegistryError, match="names a token realm on plain http at "
                                                "127.0.0.1:[0-9]+; not sending the credentials"):
            _client(registry, tls=ca).manifest("library/busybox", "1.36.1", "busybox")
        assert tokens.requests == []
    finally:
        registry.stop()
        tokens.stop()


@pytest.mark.parametrize(("header", "scheme", "params"), [
    ('Bearer realm="https://auth.example/token",service="registry.example",'
     'scope="repository:a/b:pull"', "bearer",
     {"realm": "https://auth.example/token", "service": "registry.example",
      "scope": "repository:a/b:pull"}),
    ('  BEARER  Realm = "https://a/t" , SERVICE=plain, x="a\\"b,c"', "bearer",
     {"realm": "https://a/t", "service": "plain", "x": 'a\\"b,c'}),
    ('Basic realm="hostile"', "basic", {"realm": "hostile"}),
    ("", "", {}),
])
def test_parse_challenge(header, scheme, params):
    from bundler.registry.auth import parse_challenge

    assert parse_challenge(header) == (scheme, params)


def test_token_bodies_what_is_used_and_for_how_long():
    import time

    from bundler.errors import RegistryError
    from bundler.registry import auth
    from bundler.registry.body import MAX_TOKEN_BODY

    def parsed(doc) -> tuple[str, float]:
        before = time.monotonic()
        token, deadline = auth._parse_token(json.dumps(doc).encode(), "https://t.example/x",
                                            "img")
        return token, deadline - before

    longest = "a" * auth._MAX_TOKEN
    # The longest token accepted fits, in a token response, under the cap that reads one.
    assert len(json.dumps({"token": longest, "expires_in": 300})) <= MAX_TOKEN_BODY
    assert parsed({"token": longest})[0] == longest
    assert parsed({"access_token": "oauth", "expires_in": 300})[0] == "oauth"
    assert parsed({"token": "t", "access_token": "other"})[0] == "t"
    for lifetime, lasts in ((300, 290), (11, 1), (5, 1), (0.5, 1), (999_999_999, 999_999_989)):
        assert lasts <= parsed({"token": "t", "expires_in": lifetime})[1] < lasts + 1, lifetime
    for absent in (None, True, 0, -5, 1e9, "300", [300]):  # the spec's default, 60 s
        assert 50 <= parsed({"token": "t", "expires_in": absent})[1] < 51, absent
    for bad in ({"token": longest + "a"}, {"token": ""}, {"token": 5}, {"access_token": None},
                {}, ["t"], "t", None):
        with pytest.raises(RegistryError, match="^img: t.example sent no usable token$"):
            parsed(bad)
    for body in (b"{", b"\xff", b"[" * 100_000):
        with pytest.raises(RegistryError, match="sent no usable token"):
            auth._parse_token(body, "https://t.example/x", "img")


def test_a_kept_realm_that_fails_gets_one_try(tmp_path, bearer_registry):
    """A kept realm is a hint from an earlier run: one failed token request drops it (the
    registry's own 401 then says where to ask), where a live realm's would be retried."""
    asked = []
    # 503 is retryable: a live realm saying this is asked again.
    stale, stale_url = serve("127.0.0.1", handler(
        lambda h: asked.append(h.path) or reply(h, 503), "GET"))
    tokens, registry = bearer_registry()
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [registry.url]})
        args = build_args(None, tmp_path, ["busybox:1.36.1"], registries=yaml)
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / "challenges.json").write_text(json.dumps(
            {registry.url: {"realm": stale_url + "/token",
                            "service": SERVICE}}))
        run = bundler(*args)
    finally:
        stale.shutdown()
        stale.server_close()
    assert run.code == 0, run.stderr
    assert len(asked) == 1, asked
    assert _kept(tmp_path) == {registry.url: {"realm": tokens.url, "service": SERVICE}}


def test_authorization_waits_for_a_token_another_thread_is_fetching():
    # Asking without it would only earn a 401 and a second answer.
    import threading
    import time

    import requests

    from bundler.registry.auth import Authenticator

    auth = Authenticator(requests.Session(), "https://r.example", None)
    assert auth.authorization("repository:a:pull") is None  # nobody fetching: no wait
    fetching = auth._scope_lock("repository:a:pull")
    fetching.acquire()  # as answer() and prepare() hold it while they fetch

    def fetched():
        time.sleep(0.3)
        auth._tokens["repository:a:pull"] = ("t0k3n", time.monotonic() + 60)
        fetching.release()

    threading.Thread(target=fetched).start()
    assert auth.authorization("repository:a:pull") == "Bearer t0k3n"


def test_challenges_that_give_nothing_to_answer_with_are_not_retried(tmp_path):
    """A 401 is retried only when answering it can change something: never for a scheme we
    do not speak, a Bearer challenge without a realm, or Basic without (new) credentials."""
    import requests

    from bundler.config import Credentials
    from bundler.registry.auth import Authenticator

    def answer(auth: Authenticator, header: str | None) -> bool:
        response = requests.Response()
        response.status_code = 401
        if header is not None:
            response.headers["WWW-Authenticate"] = header
        return auth.answer(response, "repository:a:pull", "img")

    anonymous = Authenticator(requests.Session(), "http://127.0.0.1:9", None)
    for header in ('Digest realm="http://127.0.0.1:9/token"', 'Bearer service="s"', "Bearer",
                   "", None, 'Basic realm="r"'):
        assert answer(anonymous, header) is False, header
    creds = Authenticator(requests.Session(), "http://127.0.0.1:9", Credentials(USER, PASSWORD))
    assert answer(creds, 'Basic realm="r"') is True  # first time: send the credentials
    assert answer(creds, 'Basic realm="r"') is False  # refused with them: an answer
    assert creds.authorization("repository:a:pull").startswith("Basic ")
