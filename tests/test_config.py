import base64
import json
import logging
import os
import stat

import pytest

from bundler.config import RegistriesConfig, docker_credentials, load_registries
from bundler.errors import InputError
from bundler.registry.endpoint import Credentials, Endpoint
from tests.cli_helpers import bundler


def _yaml(tmp_path, text):
    p = tmp_path / "registries.yaml"
    p.write_text(text)
    return str(p)


def test_no_file_means_straight_to_the_registry():
    config = load_registries(None)
    assert [e.url for e in config.endpoints("docker.io")] == ["https://registry-1.docker.io"]
    assert [e.url for e in config.endpoints("quay.io")] == ["https://quay.io"]


def test_mirrors_in_order_then_the_registry(tmp_path):
    path = _yaml(tmp_path, """
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.example:5000/v2"
      - "http://10.1.2.3:5000"
      - "plain.example"
""")
    urls = [e.url for e in load_registries(path).endpoints("docker.io")]
    assert urls == ["https://mirror.example:5000", "http://10.1.2.3:5000", "https://plain.example",
                    "https://registry-1.docker.io"]
    urls = [e.url for e in load_registries(path, default_endpoint=False).endpoints("docker.io")]
    assert urls[-1] == "https://plain.example"


def test_wildcard_mirror_and_rewrite(tmp_path):
    path = _yaml(tmp_path, """
mirrors:
  "*":
    endpoint: ["https://all.example"]
    rewrite:
      "^rancher/(.*)": "mirrored/rancher/$1"
""")
    mirror, default = load_registries(path).endpoints("quay.io")
    assert mirror.repository("rancher/multus") == "mirrored/rancher/multus"
    assert mirror.repository("library/busybox") == "library/busybox"
    assert default.repository("rancher/x") == "rancher/x"


@pytest.mark.parametrize(("pattern", "template", "before", "after"), [
    ("^rancher/(.*)", "mirrored/rancher/$1", "rancher/multus", "mirrored/rancher/multus"),
    ("^rancher/(?P<rest>.*)", "m/${rest}-x", "rancher/multus", "m/multus-x"),
    ("^rancher/", "m/$1", "rancher/multus", "m/multus"),  # no group 1: Go gives ""
    ("^(rancher)/(.*)", "a$2x/$1", "rancher/multus", "a/rancher"),  # `$2x` is a name: ""
    ("a", "o", "library/alpine", "librory/olpine"),  # every match, as ReplaceAllString
    ("^library/", "$$/", "library/alpine", "library/alpine"),  # not a name: not used
    ("^nomatch/", "x/", "library/alpine", "library/alpine"),
])
def test_rewrites_read_as_go_reads_them(tmp_path, pattern, template, before, after):
    path = _yaml(tmp_path, json.dumps({"mirrors": {"docker.io": {
        "endpoint": ["https://m.example"], "rewrite": {pattern: template}}}}))
    mirror, _ = load_registries(path).endpoints("docker.io")
    assert mirror.repository(before) == after


def test_auth_forms_and_tls(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    auth = base64.b64encode(b"bob:pw:with:colons").decode()
    path = _yaml(tmp_path, f"""
mirrors:
  docker.io: {{endpoint: ["https://a.example", "https://b.example", "https://c.example"]}}
configs:
  a.example: {{auth: {{username: alice, password: pa}}, tls: {{ca_file: {ca}}}}}
  b.example: {{auth: {{auth: {auth}}}, tls: {{insecure_skip_verify: true}}}}
  "*": {{auth: {{identity_token: tok}}}}
""")
    a, b, c, hub = load_registries(path).endpoints("docker.io")
    assert a.credentials == Credentials("alice", "pa") and a.tls.ca_file == str(ca)
    assert b.credentials == Credentials("bob", "pw:with:colons") and b.tls.insecure_skip_verify
    assert c.credentials == Credentials(identity_token="tok")
    assert hub.credentials == Credentials(identity_token="tok")
    assert "password=" not in repr(a) and "'pa'" not in repr(a) and "tok" not in repr(c)


@pytest.mark.parametrize(("text", "message"), [
    ("mirrors: [1, 2\n", "registries.yaml:2: not valid YAML (expected ',' or ']', but got "
                         "'<stream end>')"),
    ("- just a list\n", "registries.yaml: want a mapping with `mirrors` and/or `configs`, got "
                        "a list"),
    ("mirrors: [docker.io]\n", "registries.yaml: mirrors: want a mapping, got a list"),
    ("mirrors: {docker.io: {endpoint: 'https://x'}}\n",
     "registries.yaml: mirrors.docker.io.endpoint: want a list of URLs, got text (K3s refuses "
     "this file too); write endpoint: [\"https://...\"]"),
    ("mirrors: {docker.io: {endpoint: [[x]]}}\n",
     "registries.yaml: mirrors.docker.io.endpoint[0]: want text, got a list"),
    ("mirrors: {docker.io: {endpoint: ['ftp://x']}}\n",
     "registries.yaml: mirrors.docker.io.endpoint[0]: 'ftp://x': want http:// or https://"),
    ("mirrors: {docker.io: {endpoint: ['https://a', 'https://x/v2?ns=docker.io']}}\n",
     "registries.yaml: mirrors.docker.io.endpoint[1]: 'https://x/v2?ns=docker.io': a query or "
     "fragment has no meaning in an endpoint URL"),
    ("mirrors: {docker.io: {endpoint: ['https://x#top']}}\n",
     "registries.yaml: mirrors.docker.io.endpoint[0]: 'https://x#top': a query or fragment"),
    ("mirrors: {docker.io: {endpoint: ['x:99999']}}\n",
     "registries.yaml: mirrors.docker.io.endpoint[0]: 'x:99999': the port is not a number"),
    ("mirrors: {docker.io: {endpoint: ['https://']}}\n",
     "registries.yaml: mirrors.docker.io.endpoint[0]: 'https://': want scheme://host[:port]"),
    ("mirrors: {docker.io: {endpoint: ['https://a b']}}\n",
     "registries.yaml: mirrors.docker.io.endpoint[0]: 'https://a b': spaces or control"),
    ("mirrors: {docker.io: {rewrite: {'(': x}}}\n",
     "registries.yaml: mirrors.docker.io.rewrite.(: not a regular expression"),
    ("mirrors: {docker.io: {rewrite: {'^a': [b]}}}\n",
     "registries.yaml: mirrors.docker.io.rewrite.^a: want text, got a list"),
    ("mirrors: {~: {}}\n", "registries.yaml: mirrors: key None: want a name"),
    ("configs: {x.example: [auth]}\n", "registries.yaml: configs.x.example: want a mapping"),
    ("configs: {x.example: {auth: {password: {a: b}}}}\n",
     "registries.yaml: configs.x.example.auth.password: want text, got a mapping"),
    ("configs: {x.example: {tls: {ca_file: /nonexistent/ca.pem}}}\n",
     "registries.yaml: configs.x.example.tls.ca_file: no such file /nonexistent/ca.pem"),
    ("configs: {x.example: {tls: {insecure_skip_verify: 'false'}}}\n",
     "registries.yaml: configs.x.example.tls.insecure_skip_verify: want true or false, got "
     "text"),
    ("configs: {x.example: {tls: {insecure_skip_verify: 0}}}\n",
     "registries.yaml: configs.x.example.tls.insecure_skip_verify: want true or false, got a "
     "number"),
    ("configs: {x.example: {auth: {auth: '!!!'}}}\n",
     "registries.yaml: configs.x.example.auth.auth: not base64 of user:password"),
])
def test_bad_files_name_file_key_and_problem(tmp_path, text, message):
    path = _yaml(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_registries(path)
    assert str(e.value).startswith(f"{tmp_path}/{message}"), str(e.value)


def test_bad_files_that_are_not_yaml_text(tmp_path):
    path = tmp_path / "registries.yaml"
    path.write_bytes(b"mirrors:\n  \xff: {}\n")
    with pytest.raises(InputError, match=r"registries.yaml: not UTF-8 text"):
        load_registries(str(path))
    path.write_text("mirrors:\n  a\x01: {}\n")
    with pytest.raises(InputError) as e:
        load_registries(str(path))
    assert str(e.value) == (f"{path}:2: not valid YAML (character #x0001: special characters "
                            "are not allowed)")
    path.write_text("[" * 100_000)
    with pytest.raises(InputError, match=r"registries.yaml: nested too deeply"):
        load_registries(str(path))
    path.write_text("#" * (2 << 20))
    with pytest.raises(InputError, match=r"registries.yaml: larger than 1 MiB"):
        load_registries(str(path))
    with pytest.raises(InputError, match=r"is a directory"):
        load_registries(str(tmp_path))


@pytest.mark.parametrize("url", ["http://puller:s3cr3t@mirror.example:5000",
                                 "https://puller:s3/cr3t@mirror.example",
                                 "puller:s3cr3t@mirror.example"])
def test_credentials_in_an_endpoint_url_are_refused_without_echoing_them(tmp_path, url):
    path = _yaml(tmp_path, f"mirrors: {{docker.io: {{endpoint: ['https://ok.example', '{url}']}}}}")
    with pytest.raises(InputError) as e:
        load_registries(path)
    assert str(e.value) == (
        f"{path}: mirrors.docker.io.endpoint[1]: credentials in endpoint URLs are not "
        "supported; put them under configs.<host>.auth")
    assert "s3" not in str(e.value) and "puller" not in str(e.value)



def test_scheme_defaults_as_in_k3s(tmp_path):
    # k3s normalizeEndpointAddress: https, except plain http for localhost on another port.
    path = _yaml(tmp_path, """
mirrors:
  docker.io:
    endpoint: ["localhost:5000", "127.0.0.1:5000", "localhost:443", "[::1]:5000/v2/",
               "Mirror.Example:5000/prefix/"]
""")
    urls = [e.url for e in load_registries(path).endpoints("docker.io")]
    assert urls == ["http://localhost:5000", "http://127.0.0.1:5000", "https://localhost:443",
                    "http://[::1]:5000", "https://mirror.example:5000/prefix",
                    "https://registry-1.docker.io"]
    assert [e.url for e in load_registries(None).endpoints("localhost:5000")] == [
        "http://localhost:5000"]


def test_an_endpoint_path_other_than_v2_is_the_api_root_as_in_k3s(tmp_path):
    # k3s sets containerd's override_path for any other path: no /v2 is added to it.
    path = _yaml(tmp_path, """
mirrors:
  docker.io:
    endpoint: ["https://a.example", "https://b.example/", "https://c.example/v2",
               "https://d.example/v2/", "https://e.example/prefix", "https://f.example/p/v2"]
""")
    roots = [(e.url, e.api_root) for e in load_registries(path).endpoints("docker.io")]
    assert roots == [
        ("https://a.example", "https://a.example/v2"), ("https://b.example", "https://b.example/v2"),
        ("https://c.example", "https://c.example/v2"), ("https://d.example", "https://d.example/v2"),
        ("https://e.example/prefix", "https://e.example/prefix"),
        ("https://f.example/p", "https://f.example/p/v2"),
        ("https://registry-1.docker.io", "https://registry-1.docker.io/v2")]
    assert Endpoint("http://h:5000").api_root == "http://h:5000/v2"


def test_an_entry_for_the_registry_wins_over_the_wildcard_even_empty(tmp_path):
    path = _yaml(tmp_path, """
mirrors:
  "*": {endpoint: ["https://all.example"]}
  quay.io:
""")
    config = load_registries(path)
    assert [e.url for e in config.endpoints("quay.io")] == ["https://quay.io"]
    assert [e.url for e in config.endpoints("ghcr.io")] == ["https://all.example",
                                                            "https://ghcr.io"]


def test_scalars_keep_their_text_as_in_k3s(tmp_path):
    # yaml.v2 fills string fields with the text as written; PyYAML alone would make 0123
    # the number 83 and yes the boolean True.
    path = _yaml(tmp_path, """
configs:
  a.example: {auth: {username: yes, password: 0123}, tls: {insecure_skip_verify: yes}}
  b.example: {auth: {username: 1_000, password: 2001-12-14}, tls: {insecure_skip_verify: false}}
""")
    config = load_registries(path)
    assert config.configs["a.example"].credentials == Credentials("yes", "0123")
    assert config.configs["a.example"].tls.insecure_skip_verify is True
    assert config.configs["b.example"].credentials == Credentials("1_000", "2001-12-14")
    assert config.configs["b.example"].tls.insecure_skip_verify is False


TYPOS = """
mirror:
  quay.io: {endpoint: ["https://q.example"]}
mirrors:
  docker.io:
    endpoints: ["https://typo.example"]
    rewrites: {"^a": "b"}
  "https://ghcr.io": {}
configs:
  docker.io:
    auth: {user: alice, password: pw, identitytoken: tok}
    tls: {ca: /x.pem, insecure: true, cipher: x}
    tsl: {}
auths: {}
"""


def test_unknown_keys_are_warnings_naming_file_key_and_close_match(tmp_path, caplog):
    path = _yaml(tmp_path, TYPOS)
    with caplog.at_level(logging.WARNING, logger="bundler.config"):
        config = load_registries(path)
    said = [r.getMessage() for r in caplog.records]
    typo = "unknown key, ignored (as K3s does); did you mean"
    assert said == [
        f"{path}: mirror: {typo} 'mirrors'?",
        f"{path}: auths: ignored: a deprecated containerd key K3s does not use; put "
        "credentials under configs.<host>.auth",
        f"{path}: mirrors.docker.io.endpoints: {typo} 'endpoint'?",
        f"{path}: mirrors.docker.io.rewrites: {typo} 'rewrite'?",
        f"{path}: mirrors.https://ghcr.io: a mirror is named by its registry (docker.io, "
        "registry.example.com:5000), not a URL: this one matches no image",
        f"{path}: configs.docker.io.tsl: {typo} 'tls'?",
        f"{path}: configs.docker.io.auth.user: {typo} 'username'?",
        f"{path}: configs.docker.io.auth.identitytoken: {typo} 'identity_token'?",
        f"{path}: configs.docker.io.tls.ca: {typo} 'ca_file'?",
        f"{path}: configs.docker.io.tls.insecure: {typo} 'insecure_skip_verify'?",
        f"{path}: configs.docker.io.tls.cipher: unknown key, ignored (as K3s does); known "
        "here: ca_file, cert_file, key_file, insecure_skip_verify",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    # Ignored as K3s ignores them: straight to the registry, with only the password read.
    (hub,) = config.endpoints("docker.io")
    assert hub.url == "https://registry-1.docker.io" and hub.rewrites == ()
    assert hub.credentials == Credentials("", "pw") and not hub.tls.insecure_skip_verify
    assert [e.url for e in config.endpoints("quay.io")] == ["https://quay.io"]


def test_verbose_lists_each_registrys_endpoints_once_without_credentials(tmp_path, caplog,
                                                                        monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    path = _yaml(tmp_path, """
mirrors:
  docker.io:
    endpoint: ["https://mirror.internal:5000", "http://10.0.0.5:5000"]
    rewrite: {"^rancher/(.*)": "mirrored/rancher/$1"}
configs:
  mirror.internal:5000: {auth: {username: puller, password: s3cr3t}}
""")
    config = load_registries(path)
    with caplog.at_level(logging.INFO, logger="bundler.config"):
        for _ in range(3):
            config.endpoints("docker.io")
            config.endpoints("quay.io")
    assert [r.getMessage() for r in caplog.records] == [
        "docker.io: https://mirror.internal:5000 (with rewrites), then http://10.0.0.5:5000 "
        "(with rewrites), then https://registry-1.docker.io",
        "quay.io: https://quay.io",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records)
    assert "s3cr3t" not in caplog.text and "puller" not in caplog.text


def test_cli_warns_on_typos_and_lists_endpoints_with_v(fixture_registry, tmp_path):
    yaml = tmp_path / "registries.yaml"
    yaml.write_text(f"mirrors:\n  docker.io:\n    endpoint: ['{fixture_registry.registry.url}']"
                    "\n    rewrites: {'^a': b}\n")
    (tmp_path / "images.txt").write_text("busybox:1.36.1\n")
    run = bundler("-v", "build", "--images", str(tmp_path / "images.txt"), "--output-dir",
                  str(tmp_path / "dist"), "--registries", str(yaml), "--no-default-endpoint",
                  "--quiet", "--no-cache")
    assert run.code == 0, run.stderr
    lines = run.stderr.splitlines()
    assert f"bundler: warning: {yaml}: mirrors.docker.io.rewrites: unknown key, ignored (as "\
           "K3s does); did you mean 'rewrite'?" in lines, run.stderr
    assert f"bundler: note: docker.io: {fixture_registry.registry.url}" in lines, run.stderr


def _docker_config(tmp_path, monkeypatch, config):
    d = tmp_path / "docker"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("DOCKER_CONFIG", str(d))


def test_docker_config_auths_including_hub_key(tmp_path, monkeypatch):
    auth = base64.b64encode(b"hubuser:hubpass").decode()
    _docker_config(tmp_path, monkeypatch, {"auths": {
        "https://index.docker.io/v1/": {"auth": auth},
        "https://reg.example:5000": {"username": "u", "password": "p"}}})
    assert docker_credentials("registry-1.docker.io") == Credentials("hubuser", "hubpass")
    assert docker_credentials("reg.example:5000") == Credentials("u", "p")
    assert docker_credentials("other.example") is None


def test_credential_helper(tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-testhelper"
    helper.parent.mkdir()
    helper.write_text("#!/bin/sh\nread server\n"
                      'if [ "$server" = "reg.example" ]; then\n'
                      '  echo \'{"Username": "<token>", "Secret": "idtok"}\'\n'
                      "else echo 'credentials not found in native keychain'; exit 1; fi\n")
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    _docker_config(tmp_path, monkeypatch, {"credsStore": "testhelper"})
    assert docker_credentials("reg.example") == Credentials(identity_token="idtok")
    assert docker_credentials("other.example") is None


@pytest.mark.parametrize(("content", "problem"), [
    (b"{\"auths\": {", "Docker config is not JSON (Expecting property name enclosed in double "
                      "quotes: line 1 column 12 (char 11)); going on without its credentials"),
    (b"[1, 2]", "Docker config is not a JSON object; going on without its credentials"),
    (b"\xff\xfe", "Docker config is not JSON"),
    (None, "cannot read the Docker config (Is a directory); going on without its credentials"),
])
def test_a_bad_docker_config_is_a_warning_not_an_error(tmp_path, monkeypatch, caplog, content,
                                                       problem):
    d = tmp_path / "docker"
    d.mkdir()
    if content is None:
        (d / "config.json").mkdir()  # unreadable as a file, whoever we run as
    else:
        (d / "config.json").write_bytes(content)
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    with caplog.at_level(logging.WARNING, logger="bundler.config"):
        assert docker_credentials("reg.example") is None
        assert docker_credentials("other.example") is None
    assert [r.getMessage() for r in caplog.records] == [
        f"{d}/config.json: {problem}" if problem.endswith("credentials") else caplog.records[0]
        .getMessage()]
    assert caplog.records[0].getMessage().startswith(f"{d}/config.json: {problem}")


def test_docker_config_entries_of_the_wrong_shape_are_skipped(tmp_path, monkeypatch, caplog):
    _docker_config(tmp_path, monkeypatch, {
        "credHelpers": ["not", "a", "mapping"],
        "auths": {"a.example": "not an object", "b.example": {"auth": "bm90IGJhc2U2NA=!"},
                  "c.example": {"username": ["x"], "auth": 5}}})
    with caplog.at_level(logging.WARNING, logger="bundler.config"):
        for host in ("a.example", "b.example", "c.example"):
            assert docker_credentials(host) is None
    said = [r.getMessage() for r in caplog.records]
    path = tmp_path / "docker" / "config.json"
    assert said == [f"{path}: auths.a.example: not an object; ignored",
                    f"{path}: auths.b.example.auth: not base64 of user:password; ignored"]


def _helper(tmp_path, monkeypatch, script):
    helper = tmp_path / "bin" / "docker-credential-failing"
    helper.parent.mkdir(exist_ok=True)
    helper.write_text("#!/bin/sh\n" + script)
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    _docker_config(tmp_path, monkeypatch, {"credHelpers": {"reg.example": "failing"}})


@pytest.mark.parametrize(("script", "why"), [
    ("echo 'token=SECRET-VALUE half-written' ; echo SECRET-VALUE >&2; exit 3\n",
     "exit status 3"),
    ("echo '{\"Username\": \"u\", \"Secret\": SECRET-VALUE'\n", "its answer is not JSON"),
    ("echo '{\"Username\": [\"SECRET-VALUE\"]}'\n", "its answer is not a Username/Secret object"),
])
def test_a_failing_credential_helper_is_a_warning_that_never_quotes_it(tmp_path, monkeypatch,
                                                                        caplog, script, why):
    _helper(tmp_path, monkeypatch, script)
    with caplog.at_level(logging.WARNING, logger="bundler.config"):
        assert docker_credentials("reg.example") is None
    assert [r.getMessage() for r in caplog.records] == [
        f"credential helper docker-credential-failing failed for reg.example ({why}); going "
        "on without credentials"]
    assert "SECRET" not in caplog.text


def test_a_missing_credential_helper_is_a_warning(tmp_path, monkeypatch, caplog):
    _docker_config(tmp_path, monkeypatch, {"credsStore": "nonexistent-helper"})
    with caplog.at_level(logging.WARNING, logger="bundler.config"):
        assert docker_credentials("reg.example") is None
    assert [r.getMessage() for r in caplog.records] == [
        "credential helper docker-credential-nonexistent-helper (from Docker config.json) not "
        "found; going on without credentials for reg.example"]


def test_cli_build_goes_on_past_an_unreadable_docker_config(fixture_registry, tmp_path):
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text("{not json")
    (tmp_path / "images.txt").write_text("busybox:1.36.1\n")
    run = bundler("build", "--images", str(tmp_path / "images.txt"), "--output-dir",
                  str(tmp_path / "dist"), "--registries",
                  str(fixture_registry.registries_yaml(tmp_path)), "--no-default-endpoint",
                  "--quiet", "--no-cache", env={"DOCKER_CONFIG": str(docker)})
    assert run.code == 0, run.stderr
    assert run.stderr.splitlines() == [
        f"bundler: warning: {docker}/config.json: Docker config is not JSON (Expecting "
        "property name enclosed in double quotes: line 1 column 2 (char 1)); going on without "
        "its credentials"]


def test_a_registry_is_resolved_once_when_threads_ask_at_once(monkeypatch, caplog):
    # build resolves its images on several threads; -v lists each registry's endpoints once.
    import logging
    import threading
    import time

    config = RegistriesConfig()
    slow = RegistriesConfig._endpoints

    def resolving(self, registry):
        time.sleep(0.05)  # the window in which a second thread used to resolve it too
        return slow(self, registry)

    monkeypatch.setattr(RegistriesConfig, "_endpoints", resolving)
    start = threading.Barrier(6)

    def ask():
        start.wait()
        config.endpoints("docker.io")

    with caplog.at_level(logging.INFO, logger="bundler.config"):
        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [r.getMessage() for r in caplog.records].count(
        "docker.io: https://registry-1.docker.io") == 1


@pytest.mark.parametrize(("name", "meant"), [
    ("docker.oi", "docker.io"), ("dokcer.io", "docker.io"), ("DOCKER.OI", "docker.io"),
    ("quay.oi", "quay.io"), ("registry.k8s.oi", "registry.k8s.io"),
    ("registry.internel:5000", "registry.internal:5000"),  # one of configs' hosts
])
def test_a_mirror_named_like_a_known_registry_is_a_typo(tmp_path, caplog, name, meant):
    path = _yaml(tmp_path, f'mirrors:\n  "{name}":\n    endpoint: ["https://m.example"]\n'
                           'configs:\n  "registry.internal:5000": {}\n')
    with caplog.at_level(logging.WARNING, logger="bundler.config"):
        load_registries(path)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: mirrors.{name}: no registry is named so here; did you mean '{meant}'? (a "
        "mirror applies only to images of the registry it is named by)"]


@pytest.mark.parametrize("name", ["docker.io", "gcr.io", "ghcr.io", "*", "registry.internal:5000",
                                  "my-registry.example.com", "localhost:5000", "Quay.io"])
def test_a_mirror_named_by_a_registry_or_unlike_any_is_no_typo(tmp_path, caplog, name):
    path = _yaml(tmp_path, f'mirrors:\n  "{name}":\n    endpoint: ["https://m.example"]\n'
                           'configs:\n  "registry.internal:5000": {}\n')
    with caplog.at_level(logging.WARNING, logger="bundler.config"):
        load_registries(path)
    assert caplog.records == []
