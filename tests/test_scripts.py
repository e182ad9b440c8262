"""scripts/deps and scripts/test: what a newcomer runs first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_deps_leaves_an_installed_venv_alone():
    venv = ROOT / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve():
        pytest.skip("not run from the .venv scripts/deps made")
    script = venv / "bin" / "bundler"
    before = script.stat()
    done = subprocess.run([str(ROOT / "scripts" / "deps")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    after = script.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert "installing" not in done.stderr


def _collected(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "--collect-only", "-q", *args, "tests/test_docker_source.py",
                           "tests/test_demo.py", "tests/test_completion.py"],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return {line for line in done.stdout.splitlines() if "::" in line}


def test_daemon_tests_can_be_left_out():
    everything = _collected()
    docker, containerd = _collected("-m", "dockerd"), _collected("-m", "containerd")
    assert docker and all(t.startswith("tests/test_docker_source.py::") for t in docker)
    assert "tests/test_demo.py::test_demo_runs_end_to_end" in containerd
    assert _collected("-m", "not dockerd and not containerd") == everything - docker - containerd


def test_readme_install_works_in_a_fresh_home(tmp_path):
    """The README's install lines, as shown, in a home without ~/.local/bin, then the
    --version it shows, through the link they made."""
    from tests.docsenv import blocks, commands

    readme = ROOT / "README.md"
    install = [c for b in blocks(readme) if b.kind == "console" for c in commands(b)
               if "~/.local/bundler" in c.text]
    assert [c.text.split()[0] for c in install] == ["python3", "mkdir"]
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PIP_CACHE_DIR": str(tmp_path / "pip-cache")}
    env.pop("VIRTUAL_ENV", None)
    for cmd in install:
        done = subprocess.run(["bash", "-c", cmd.text], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, f"$ {cmd.text}\n{done.stderr[-3000:]}"
    version = next(c for b in blocks(readme) if b.kind == "console" for c in commands(b)
                   if c.text == "bundler --version")
    done = subprocess.run([str(home / ".local" / "bin" / "bundler"), "--version"],
                          capture_output=True, text=True, env=env)
    assert done.stdout.splitlines() == version.output
    shown = subprocess.run([str(home / ".local" / "bundler" / "bin" / "pip"), "show",
                            "k3s-airgap-bundler"], capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and "Name: k3s-airgap-bundler" in shown.stdout
