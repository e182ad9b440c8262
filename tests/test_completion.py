"""completions/ and man/ are generated from bundler's parser, are up to date, and work."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASH = ROOT / "completions" / "bundler.bash"


def test_generated_files_are_up_to_date():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_bash_completion_loads():
    done = subprocess.run(["bash", "-c", f"source {BASH}; complete -p bundler"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "complete -o bashdefault -F _shtab_bundler bundler"
    assert not done.stderr


def _bash_complete(*words: str) -> list[str]:
    """What <Tab> offers after `bundler WORDS` (the last word is the one being completed)."""
    script = (f"source {BASH}\n"
              f"COMP_WORDS=(bundler {' '.join(words)}); COMP_CWORD={len(words)}\n"
              f"COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}\n"
              "_shtab_bundler bundler; printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_and_their_flags():
    import argparse

    from bundler import cli

    commands = next(a for a in cli.parser()._actions
                    if isinstance(a, argparse._SubParsersAction)).choices
    assert _bash_complete("") == list(commands)
    assert {"build", "verify", "place", "status", "delta", "patch"} <= set(commands)
    assert _bash_complete("--v") == ["--version", "--verbose"]
    assert _bash_complete("pu") == ["push"]
    # The subcommands' flags are added lazily by cli; the generator must have added them.
    assert _bash_complete("build", "--reg") == ["--registries"]
    assert _bash_complete("build", "--layers", "") == ["preserve", "uncompressed"]
    assert _bash_complete("place", "--distro", "r") == ["rke2"]
    assert "--print-registries" in _bash_complete("push", "--")


def test_bash_completes_files_for_a_bundle():
    assert "pyproject.toml" in _bash_complete("verify", "pyproj")


@pytest.mark.parametrize("shell, name", [("zsh", "_bundler"), ("fish", "bundler.fish")])
def test_other_shells_parse_their_script(shell, name):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (scripts/deps does not install it)")
    done = subprocess.run([shell, "-n", str(ROOT / "completions" / name)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_fish_completes_commands_and_their_flags():
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed (scripts/deps installs it)")
    fish = ROOT / "completions" / "bundler.fish"
    script = (f"source {fish}; complete -C 'bundler bu'; complete -C 'bundler build --reg'; "
              "complete -C 'bundler place --distro '")
    done = subprocess.run(["fish", "--no-config", "-c", script], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    offered = [line.split("\t")[0] for line in done.stdout.splitlines()]
    assert offered == ["build", "--registries", "k3s", "rke2"]


def test_man_page_has_every_command():
    page = (ROOT / "man" / "bundler.1").read_text()
    assert page.startswith(".TH BUNDLER ")
    for name in ("build", "verify", "place", "inspect", "push", "images"):
        assert f"bundler {name}" in page
    assert "\\-\\-print\\-registries" in page


def test_readme_install_lines_for_completion_and_man(tmp_path):
    from tests.docsenv import blocks

    block = next(b for b in blocks(ROOT / "README.md")
                 if b.kind == "sh" and any("completions/" in line for line in b.lines))
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "MANPAGER": "cat", "MANWIDTH": "80"}
    done = subprocess.run(["bash", "-euc", "\n".join(block.lines)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "bundler - build, verify, place and push" in done.stdout
    bash = tmp_path / ".local/share/bash-completion/completions/bundler"
    assert bash.read_text() == BASH.read_text()
    assert (tmp_path / ".config/fish/completions/bundler.fish").exists()
