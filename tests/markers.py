"""Marks each test by the daemons it starts, so a machine without them can leave them out.

A test that uses the `dockerd` fixture is marked `dockerd`; one that uses `containerd` or
`clean_containerd` (or sets `pytestmark = pytest.mark.containerd`) is marked `containerd`.
`pytest -m "not dockerd and not containerd"` then runs everything else; scripts/test does that
(and installs neither package) when BUNDLER_TEST_NO_DAEMONS=1. Loaded by pyproject's addopts.
"""

from __future__ import annotations

import pytest

DAEMONS = {"dockerd": "dockerd", "containerd": "containerd", "clean_containerd": "containerd"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "dockerd: starts a real Docker engine (Debian docker.io)")
    config.addinivalue_line("markers", "containerd: starts a real containerd (Debian containerd)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in DAEMONS:
                item.add_marker(DAEMONS[fixture])
