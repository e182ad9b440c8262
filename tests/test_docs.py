"""Every example of README.md and docs/*.md runs, against real registries, as it is shown.

The convention (```console blocks, `...` placeholders, `echo $?` after a failing command, the
example hosts) is described in tests/docsenv.py. A command that cannot run here is listed in
NOT_RUN with the reason; it must show no output, so nothing unchecked is shown as output.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import docsenv
from tests.docsenv import ROOT, blocks, commands, matches

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_PAGES = ("build", "verify", "place", "inspect", "push", "images", "status", "delta",
                 "patch", "split", "join")
README_LIMIT = 16 * 1024

NOT_RUN = {
    "python3 -m venv ~/.local/bundler && ~/.local/bundler/bin/pip install .":
        "installs into the user's home; the tests run the bundler of scripts/deps's .venv",
    "mkdir -p ~/.local/bin && ln -s ~/.local/bundler/bin/bundler ~/.local/bin/bundler":
        "changes the user's home",
    "bundler build": "pulls from docker.io, which the tests do not reach",
    "bundler build --registries /etc/rancher/k3s/registries.yaml --layers uncompressed --json":
        "reads the machine's K3s registries.yaml",
    "bundler build --source docker --pull never":
        "needs a Docker engine holding the images (tests/test_docker_source.py)",
    "scripts/test": "runs the whole suite",
    "scripts/demo": "run by tests/test_demo.py",
    "scripts/bench --no-huge --no-many --no-front": "a benchmark, minutes long",
    "scripts/bench": "a benchmark, minutes long",
    "sudo bundler place dist/k3s-airgap-images-multus-amd64.tar.zst":
        "writes into /var/lib/rancher/k3s (the same place with --data-dir is run)",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    for tool in ("docker-registry", "zstd", "openssl"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.fail(f"{tool} is not installed; run scripts/test, which installs it")
    prepared = docsenv.prepare(tmp_path_factory.mktemp("docs"))
    try:
        yield prepared
    finally:
        prepared.stop()


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_run_as_shown(env, page, tmp_path):
    results = docsenv.run_page(env, page, tmp_path / "work", skip=set(NOT_RUN))
    failures = []
    for i, (block, cmd, code, out) in enumerate(results):
        where = f"{page.name}:{cmd.line}: $ {cmd.text}"
        if cmd.text in NOT_RUN:
            if cmd.output:
                failures.append(f"{where}: not run, so it may show no output")
            continue
        follows = results[i + 1][1].text if i + 1 < len(results) else ""
        if code != 0 and not (follows == "echo $?" and results[i + 1][0] is block):
            failures.append(f"{where}: exit {code} without `$ echo $?` after it\n{out}")
        if cmd.output and not matches(cmd.output, out):
            failures.append(f"{where}: printed\n{out}\nwhere the page shows\n"
                            + "\n".join(cmd.output))
    assert not failures, "\n\n".join(failures)


def test_every_not_run_command_is_shown():
    shown = {c.text for page in PAGES for b in blocks(page) if b.kind == "console"
             for c in commands(b)}
    assert set(NOT_RUN) <= shown, sorted(set(NOT_RUN) - shown)


def test_every_page_has_examples_that_run():
    for page in PAGES:
        if page.name == "benchmark.md":
            continue
        run = [c for b in blocks(page) if b.kind == "console" for c in commands(b)
               if c.text not in NOT_RUN]
        assert run, f"{page.name}: no example that the tests run"


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= README_LIMIT
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", readme))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"pages the README does not link: {sorted(pages - linked)}"


def test_every_subcommand_has_a_page():
    help_text = subprocess.run([sys.executable, "-m", "bundler", "--help"], capture_output=True,
                               text=True, check=True).stdout
    listed = re.search(r"\{([\w,]+)\}", help_text)
    names = (listed.group(1).split(",") if listed
             else re.findall(r"^    (\w+)\s{2,}", help_text, re.MULTILINE))
    assert set(names) == set(COMMAND_PAGES), names
    readme = (ROOT / "README.md").read_text()
    for name in names:
        page = ROOT / "docs" / f"{name}.md"
        assert page.exists(), f"bundler {name} has no docs/{name}.md"
        text = page.read_text()
        for section in ("## Synopsis", "## Description", "## Options", "## Examples",
                        "## Exit codes"):
            assert section in text, f"docs/{name}.md has no {section!r}"
        assert f"bundler {name} " in text.split("## Synopsis", 1)[1].split("##", 1)[0]
        assert f"$ bundler {name}" in readme, f"README shows no example of bundler {name}"


@pytest.mark.parametrize("shown, actual, ok", [
    (["OK a: 3 images, ... MB"], "OK a: 3 images, 0.2 MB\n", True),
    (["OK a: 3 images, ... MB"], "OK a: 4 images, 0.2 MB\n", False),
    (["first", "...", "last"], "first\nx\ny\nlast\n", True),
    (["first", "...", "last"], "first\nlast\n", True),
    (["first", "last"], "first\nmiddle\nlast\n", False),
    (["only"], "only\nmore\n", False),
])
def test_placeholders(shown, actual, ok):
    assert matches(shown, actual) is ok
