"""Properties of registries.yaml loading: any file is a configuration or one InputError."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.config import load_registries
from bundler.errors import InputError

KEYS = ["mirrors", "configs", "mirror", "auths", "endpoint", "endpoints", "rewrite", "auth",
        "tls", "username", "password", "identity_token", "ca_file", "cert_file", "key_file",
        "insecure_skip_verify", "docker.io", "*", "localhost:5000", "quay.io"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
    st.sampled_from(["https://m.example:5000/v2/", "http://u:pw@h", "localhost:5000", "ftp://x",
                     "h/?q", "[::1]:5000", "https://[::1", "(", "^a/(.*)", "$1", "yes", "0123",
                     "/nonexistent/ca.pem"]),
)
# Nested mappings keyed mostly by the names registries.yaml uses, so the walk goes deep.
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers()),
                        inner, max_size=5)),
    max_leaves=30,
)


@pytest.fixture(autouse=True)
def _no_docker_config(monkeypatch, tmp_path_factory):
    # Credentials come from here when registries.yaml names none: an empty config.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path_factory.mktemp("docker")))


def _load(text: str):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "registries.yaml"
        path.write_text(text)
        return load_registries(str(path)), str(path)


def _check(text: str) -> None:
    try:
        config, path = _load(text)
    except InputError as e:
        message = str(e)
        assert "\n" not in message, message
        assert "registries.yaml" in message
        return
    for registry in [*config.mirrors, "docker.io", "ghcr.io", "localhost:5000"]:
        if "://" in registry:
            continue
        for endpoint in config.endpoints(registry):
            parts = urlsplit(endpoint.url)
            assert parts.scheme in ("http", "https"), endpoint.url
            assert "@" not in endpoint.url and not parts.query and not parts.fragment
            assert endpoint.host == parts.netloc and endpoint.host
            for repository in ("rancher/x", "library/busybox", "a"):
                assert endpoint.repository(repository)  # any rewrite applies, or is skipped


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_yaml_document_is_a_configuration_or_an_input_error(doc):
    logging.getLogger("bundler.config").setLevel(logging.ERROR)  # warnings are expected
    _check(yaml.safe_dump(doc))
    _check(json.dumps(doc, default=str))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="mirors:endpoint[]{}\"'- \n\t*&!|>%@#,?\x00\x01\x85\ufeff", max_size=120))
def test_any_text_is_a_configuration_or_an_input_error(text):
    logging.getLogger("bundler.config").setLevel(logging.ERROR)
    _check(text)


secrets = st.text(alphabet="ABCDEFGHJKMNPQRSTUVWXYZ23456789/#?:%", min_size=6, max_size=20)


@settings(max_examples=200, deadline=None)
@given(secrets, st.sampled_from(["http://puller:{}@m.example:5000", "https://x:{}@m/v2",
                                 "puller:{}@m.example", "http://{}@m.example"]),
       st.integers(0, 2))
def test_a_password_in_an_endpoint_url_is_never_in_the_message(secret, form, position):
    urls = ["https://a.example", "http://b.example:5000"]
    urls.insert(position, form.format(secret))
    with pytest.raises(InputError) as e:
        _load(yaml.safe_dump({"mirrors": {"docker.io": {"endpoint": urls}}}))
    assert secret not in str(e.value)
    assert f"mirrors.docker.io.endpoint[{position}]: credentials in endpoint URLs are not " \
           "supported" in str(e.value)
