"""What the distribution says about itself: its name, licence and changelog."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bundler import __version__

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent


def test_distribution_name_is_its_own_and_the_command_is_bundler():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # "bundler" on PyPI is another project's.
    assert project["name"] == "k3s-airgap-bundler"
    assert project["scripts"] == {"bundler": "bundler.__main__:run"}


def test_version_names_the_distribution_so_it_is_told_from_rubys_bundler(capsys):
    # Debian's ruby-bundler provides /usr/bin/bundler too; its --version says "Bundler version".
    from bundler import cli

    with pytest.raises(SystemExit):
        cli.main(["--version"])
    out = capsys.readouterr().out
    assert out == f"bundler {__version__} (k3s-airgap-bundler: K3s airgap image bundles)\n"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] in out


def test_license_file_is_the_apache_2_text_pyproject_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0")
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_changelog_has_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert re.search(rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d\d-\d\d$", text, re.M)
    assert "issue" not in text.lower(), "internal work items are not for readers"
