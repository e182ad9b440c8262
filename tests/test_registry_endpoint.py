"""The endpoint model the registry client takes: URL, API root, host, rewrites, secrets kept
out of sight; and the client knowing no configuration file."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import pytest

import bundler.registry
from bundler.registry.endpoint import DEFAULT_TIMEOUT, Credentials, Endpoint, TLSConfig


def test_endpoint_host_is_host_and_port_only():
    assert Endpoint("http://mirror.example:5000/prefix").host == "mirror.example:5000"
    assert Endpoint("http://u:pw@mirror.example:5000").host == "mirror.example:5000"
    assert Endpoint("http://[::1]:5000").host == "[::1]:5000"


def test_the_api_root_is_v2_unless_the_path_overrides_it():
    assert Endpoint("https://h:5000").api_root == "https://h:5000/v2"
    assert Endpoint("https://h/prefix", override_path=True).api_root == "https://h/prefix"


def test_an_endpoint_without_tls_settings_or_credentials_has_the_defaults():
    e = Endpoint("https://h")
    assert e.tls == TLSConfig() and not e.tls.insecure_skip_verify
    assert e.credentials is None and e.rewrites == ()
    # The default the build and push pages state for --timeout.
    for page in ("build.md", "push.md"):
        text = (Path(__file__).parent.parent / "docs" / page).read_text()
        stated = re.search(r"^\| `--timeout SECONDS` \| ([\d.]+) \|", text, re.M)
        assert stated and DEFAULT_TIMEOUT == float(stated[1]), page


@pytest.mark.parametrize(("rewrites", "before", "after"), [
    ((("^rancher/(.*)", "mirrored/rancher/$1"),), "rancher/multus", "mirrored/rancher/multus"),
    ((("^rancher/(?P<rest>.*)", "m/${rest}-x"),), "rancher/multus", "m/multus-x"),
    ((("^rancher/", "m/$1"),), "rancher/multus", "m/multus"),  # no group 1: Go gives ""
    ((("a", "o"),), "library/alpine", "librory/olpine"),  # every match
    # The first pattern that changes the name wins; one that does not is passed over.
    ((("^nomatch/", "x/"), ("^library/", "y/"), ("^lib", "z")), "library/alpine", "y/alpine"),
])
def test_rewrites_read_as_go_reads_them(rewrites, before, after):
    assert Endpoint("https://m.example", rewrites=rewrites).repository(before) == after


def test_a_rewrite_that_gives_no_repository_name_is_not_used_and_said_once(caplog):
    # A pattern no other test uses: each message is said once per process.
    e = Endpoint("https://m.example", rewrites=(("^librar(y)/", "$$/"),))
    with caplog.at_level(logging.WARNING):
        assert e.repository("library/alpine") == "library/alpine"
        assert e.repository("library/alpine") == "library/alpine"
    said = [r.getMessage() for r in caplog.records]
    assert said == ["rewrite '^librar(y)/' of library/alpine gives '$/alpine', not a "
                    "repository name; not used"], said


def test_credentials_are_never_in_a_repr():
    for c in (Credentials("alice", "s3cr3t"), Credentials(identity_token="t0ken")):
        shown = repr(c) + repr(Endpoint("https://h", credentials=c))
        assert "alice" not in shown and "s3cr3t" not in shown and "t0ken" not in shown


def test_nothing_under_registry_imports_a_configuration_reader():
    """The client takes Endpoint values; registries.yaml and Docker's config.json are
    config.py's to read."""
    package = Path(bundler.registry.__file__).parent
    found = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if n in ("bundler.config", "yaml")]
    assert found == []
