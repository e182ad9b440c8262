"""A reader that goes away (`bundler build --json | head -1`) is not an error: bundler stops
writing there, says nothing, and exits with the code of what it did, as `cat` would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.cli_helpers import build_args
from tests.conftest import REFS

RUNS = 8


def _piped(args: list[str], *, read_first_line: bool) -> tuple[int, bytes]:
    """Run `bundler ARGS` with stdout a real pipe whose reader closes it: at once (every
    write fails), or after the first line, as `head -1` does."""
    proc = subprocess.Popen([sys.executable, "-m", "bundler", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if read_first_line:
        assert proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    return proc.wait(timeout=120), err


@pytest.fixture(scope="module")
def warm_build(fixture_registry, tmp_path_factory) -> list[str]:
    tmp = tmp_path_factory.mktemp("pipe")
    args = build_args(fixture_registry, tmp, REFS, "--json")
    assert subprocess.run([sys.executable, "-m", "bundler", *args], capture_output=True
                          ).returncode == 0
    return args


@pytest.mark.parametrize("read_first_line", [False, True])
def test_build_json_into_a_closed_pipe_exits_0_quietly(warm_build, read_first_line):
    for _ in range(RUNS):
        code, err = _piped(warm_build, read_first_line=read_first_line)
        assert (code, err) == (0, b"")


def test_a_failed_verify_keeps_its_exit_code_when_the_pipe_closes(builds, tmp_path):
    bundle = tmp_path / "k3s-airgap-images-multus-amd64.tar.zst"
    shutil.copy(builds["p1"] / bundle.name, bundle)
    with open(bundle, "r+b") as f:
        f.seek(os.path.getsize(bundle) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    for read_first_line in (False, True):
        code, err = _piped(["verify", str(bundle), "--json"], read_first_line=read_first_line)
        assert (code, err) == (1, b"")


def test_help_into_a_closed_pipe_is_quiet():
    for _ in range(RUNS):
        code, err = _piped(["build", "--help"], read_first_line=False)
        assert (code, err) == (0, b"")
