"""The image model's parsers: what a config may say its platform is."""

from __future__ import annotations

import json

import pytest

from bundler.errors import BundlerError
from bundler.image import parse_config
from bundler.platform import Platform

DIFF_ID = "sha256:" + "ab" * 32


def _config(**platform: object) -> bytes:
    return json.dumps({**platform, "rootfs": {"type": "layers", "diff_ids": [DIFF_ID]}}).encode()


@pytest.mark.parametrize("fields,want", [
    ({"os": "linux", "architecture": "amd64"}, Platform("linux", "amd64")),
    ({"os": "linux", "architecture": "arm", "variant": "v7"}, Platform("linux", "arm", "v7")),
    ({"os": "windows", "architecture": "amd64", "variant": ""}, Platform("windows", "amd64")),
    ({"os": "linux", "architecture": "ppc64le"}, Platform("linux", "ppc64le")),
    ({"os": "x" * 64, "architecture": "a_b.c-D9"}, Platform("x" * 64, "a_b.c-D9")),
    ({}, Platform("", "")),  # absent: the caller compares it with what it wants
])
def test_platform_names_are_read(fields, want):
    assert parse_config(_config(**fields), 1, "docker.io/rancher/x:1") == (want, [DIFF_ID])


@pytest.mark.parametrize("key,value", [
    ("os", "linux\x1b[2J\x1b[H"), ("architecture", "amd64\nOK fake"), ("variant", "\x1b[8m"),
    ("architecture", "amd64/v8"), ("os", "li nux"), ("architecture", "x" * 65),
    ("os", "linüx"), ("variant", "v7\r"),
])
def test_a_platform_field_that_is_not_a_name_is_refused_in_one_escaped_line(key, value):
    """Platform strings reach messages and inspect's output: a config may not carry a
    terminal escape, a line break or a slash in them (the attacker's 'OK fake' line)."""
    fields = {"os": "linux", "architecture": "amd64", key: value}
    with pytest.raises(BundlerError) as e:
        parse_config(_config(**fields), 1, "docker.io/rancher/x:1")
    text = str(e.value)
    assert text.startswith("docker.io/rancher/x:1: config ") and f"config {key} " in text
    assert text.isprintable(), text
