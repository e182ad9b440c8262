"""The command line: arguments checked before any work, with the flags' names in the message."""

from __future__ import annotations

import socket
import time

import pytest

from bundler.cli import parser
from tests.cli_helpers import assert_one_line_error, bundler


def _unreachable_registries(tmp_path):
    """A registries.yaml whose only mirror is a port nothing listens on: any request fails."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "registries.yaml"
    path.write_text(f'mirrors:\n  docker.io:\n    endpoint: ["http://127.0.0.1:{port}"]\n')
    images = tmp_path / "images.txt"
    images.write_text("docker.io/rancher/x:1\n")
    return ["--registries", str(path), "--no-default-endpoint", "--images", str(images),
            "--output-dir", str(tmp_path / "out"), "--quiet"]


@pytest.mark.parametrize(("args", "fragments"), [
    (["--arch", "bogus"], ["--arch 'bogus'", "unknown architecture"]),
    (["--pull", "never"], ["--pull goes with --source docker"]),
])
def test_bad_combinations_fail_before_any_request(tmp_path, args, fragments):
    started = time.monotonic()
    run = bundler("build", *_unreachable_registries(tmp_path), *args)
    assert_one_line_error(run, *fragments)
    assert run.code == 2
    assert "cannot connect" not in run.stderr
    assert time.monotonic() - started < 10
    assert not (tmp_path / "out").exists()


def test_cache_dir_and_no_cache_exclude_each_other(tmp_path):
    run = bundler("build", "--cache-dir", str(tmp_path), "--no-cache")
    assert run.code == 2
    assert "not allowed with argument --cache-dir" in run.stderr


@pytest.mark.parametrize("argv", [["-v", "verify", "x"], ["verify", "x", "-v"],
                                  ["build", "-v"], ["place", "x", "--verbose"]])
def test_verbose_before_or_after_the_subcommand(argv):
    assert parser().parse_args(argv).verbose is True


def test_not_verbose_by_default():
    assert parser().parse_args(["verify", "x"]).verbose is False


def test_output_dir_that_is_a_file_says_so(tmp_path):
    blocker = tmp_path / "dist"
    blocker.write_text("not a directory")
    for out in (blocker, blocker / "sub"):
        args = _unreachable_registries(tmp_path)
        args[args.index("--output-dir") + 1] = str(out)
        run = bundler("build", *args)
        assert_one_line_error(run, f"{blocker}: not a directory")
        assert run.code == 3
    assert blocker.read_text() == "not a directory"


def test_max_inflation_must_be_positive(tmp_path):
    run = bundler("verify", str(tmp_path / "x.tar.zst"), "--max-inflation", "0")
    assert_one_line_error(run, "--max-inflation 0: want a positive ratio")
    assert run.code == 2


def test_unusable_cache_names_the_way_out(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache should be")
    run = bundler("build", *_unreachable_registries(tmp_path), "--cache-dir", str(blocker))
    assert_one_line_error(run, f"cache directory {blocker}: not a directory",
                          "choose another with --cache-dir, or --no-cache")
    assert run.code == 3
