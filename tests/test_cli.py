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


COMMANDS = ["build", "verify", "place", "inspect", "push", "images"]


def _help(*args: str) -> str:
    run = bundler(*args, "--help")
    assert run.code == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_help_shows_examples_that_parse(command):
    import shlex

    text = _help(*([command] if command else []))
    examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples, text
    for line in examples:
        words = shlex.split(line.split("#", 1)[0].split(">", 1)[0], posix=True)
        words = words[1:] if words[0] == "sudo" else words
        assert words[0] == "bundler", line
        assert command in (None, words[1]), line
        parser().parse_args(words[1:])  # every flag in it is real


def test_a_subcommands_unknown_option_gets_its_usage_and_a_hint():
    run = bundler("build", "--platform", "linux/amd64")
    assert run.code == 2
    assert run.stderr.startswith("usage: bundler build "), run.stderr
    assert run.stderr.splitlines()[-1] == (
        "bundler build: error: unrecognized arguments: --platform linux/amd64 (bundler build "
        "takes --arch amd64, arm64 or a comma-separated list; linux is implied)")
    run = bundler("verify", "x.tar.zst", "--platform=amd64")
    assert run.stderr.startswith("usage: bundler verify "), run.stderr
    assert "--arch" not in run.stderr  # verify has no --arch to offer


def test_push_help_names_the_port_as_the_docs_do():
    from tests.docsenv import ROOT

    assert "--to HOST[:PORT][/PREFIX]" in _help("push")
    assert "--to HOST[:PORT][/PREFIX]" in (ROOT / "docs" / "push.md").read_text()


def test_build_help_says_several_architectures():
    text = " ".join(_help("build").split())
    assert "one platform" not in text
    assert "for each architecture of --arch" in text


@pytest.mark.parametrize("command", ["verify", "inspect", "place", "images"])
def test_verbose_help_says_what_it_adds(command):
    text = " ".join(_help(command).split())
    assert "where images come from" not in text and "retried" not in text
    assert "-v, --verbose accepted, adds nothing" in text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("arches", [[], ["--arch", "amd64,arm64"]])
def test_a_cause_every_image_shares_is_said_once_with_the_way_forward(tmp_path, arches):
    port = _closed_port()
    registries = tmp_path / "registries.yaml"
    registries.write_text(
        f'mirrors:\n  registry.invalid:\n    endpoint: ["http://127.0.0.1:{port}"]\n')
    images = tmp_path / "images.txt"
    images.write_text("".join(f"registry.invalid/rancher/{n}:1\n" for n in "abcd"))
    run = bundler("build", "--images", str(images), "--registries", str(registries),
                  "--output-dir", str(tmp_path / "out"), "--no-cache", "--quiet", *arches)
    said = "amd64, arm64: " if arches else ""
    assert_one_line_error(run, f"bundler: error: {said}4 images failed, all for one reason: "
                               f"127.0.0.1:{port}: cannot connect (",
                          "; registry.invalid: cannot connect (",
                          "--registries FILE", "scripts/demo", "with -v")
    assert run.code == 3
    error = run.stderr.strip()
    assert error.count("refused") == 1, error
    assert error.count("registry.invalid: cannot connect") == 1, error
    assert len(error) < 500, error
    assert not (tmp_path / "out").exists()


def test_no_docker_daemon_is_said_once_with_the_way_forward(tmp_path):
    images = tmp_path / "images.txt"
    images.write_text("docker.io/rancher/a:1\ndocker.io/rancher/b:1\n")
    run = bundler("build", "--source", "docker", "--images", str(images), "--no-cache",
                  "--output-dir", str(tmp_path / "out"), "--quiet",
                  env={"DOCKER_HOST": f"unix://{tmp_path}/missing.sock"})
    assert_one_line_error(run, "bundler: error: 2 images failed, all for one reason: cannot "
                               "reach the Docker daemon (", "DOCKER_HOST",
                          "--source registry pulls without a daemon")
    assert run.code == 3
    assert run.stderr.count("Docker daemon") == 1


@pytest.mark.parametrize(("arch", "meant"), [
    ("linux/amd64", "amd64"), ("AMD64", "amd64"), ("Linux/ARM64", "arm64"),
    ("linux/arm64/v8", "arm64/v8"), ("linux/x86_64", "amd64"), ("linux/arm/v7", "arm/v7"),
    ("amd64,LINUX/arm64", "arm64"),
])
def test_an_architecture_in_another_form_gets_a_did_you_mean(tmp_path, arch, meant):
    run = bundler("build", *_unreachable_registries(tmp_path), "--arch", arch)
    assert_one_line_error(run, f"--arch {arch!r}: unknown architecture",
                          f"(did you mean {meant}? known: amd64, ")
    assert run.code == 2


def test_an_architecture_unlike_any_gets_no_guess(tmp_path):
    run = bundler("build", *_unreachable_registries(tmp_path), "--arch", "linux/sparc")
    assert_one_line_error(run, "unknown architecture 'linux/sparc' (known: amd64, ")
