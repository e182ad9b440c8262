import base64
import json
import os
import stat

import pytest

from bundler.config import Credentials, docker_credentials, load_registries
from bundler.errors import InputError


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
  "*": {{auth: {{identitytoken: tok}}}}
""")
    a, b, c, hub = load_registries(path).endpoints("docker.io")
    assert a.credentials == Credentials("alice", "pa") and a.tls.ca_file == str(ca)
    assert b.credentials == Credentials("bob", "pw:with:colons") and b.tls.insecure_skip_verify
    assert c.credentials == Credentials(identity_token="tok")
    assert hub.credentials == Credentials(identity_token="tok")
    assert "pa" not in repr(a) and "tok" not in repr(c)


@pytest.mark.parametrize(("text", "fragment"), [
    ("mirrors: [1, 2\n", "registries.yaml:2: not valid YAML"),
    ("- just a list\n", "want a mapping"),
    ("mirrors: {docker.io: {endpoint: 'https://x'}}\n", "must be a list of URLs"),
    ("mirrors: {docker.io: {endpoint: ['ftp://x']}}\n", "want http:// or https://"),
    ("mirrors: {docker.io: {rewrite: {'(': x}}}\n", "rewrite '('"),
    ("configs: {x.example: {tls: {ca_file: /nonexistent/ca.pem}}}\n", "no such file"),
    ("configs: {x.example: {auth: {auth: '!!!'}}}\n", "not base64 of user:password"),
])
def test_bad_files_name_file_and_problem(tmp_path, text, fragment):
    path = _yaml(tmp_path, text)
    with pytest.raises(InputError, match=fragment.replace("(", r"\(")):
        config = load_registries(path)
        for name in ("docker.io", "x.example"):
            config.endpoints(name)
        load_registries(path)._endpoint("https://x.example", ())


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
