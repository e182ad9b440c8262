"""errors: each error's exit code, what the one handler (cli.main) makes of it, and the line a
local I/O failure becomes, from real failing system calls."""

from __future__ import annotations

import errno
import os
import re

import pytest

from bundler import cli, errors
from bundler.errors import (
    BundlerError,
    DigestMismatch,
    EnvironmentFailure,
    InputError,
    NetworkError,
    PlatformError,
    RegistryError,
    VerificationFailed,
)

# What the module's docstring (and the README after it) promises each kind of failure.
DOCUMENTED = {int(code) for codes in re.findall(r"^\s+(\d+(?:, \d+)*)\s", errors.__doc__,
                                                  re.MULTILINE)
              for code in codes.split(", ")}
CONTENT = (BundlerError, RegistryError, DigestMismatch, PlatformError, VerificationFailed)


def test_the_exit_codes_are_the_documented_ones():
    assert {errors.EXIT_FAILED, errors.EXIT_USAGE, errors.EXIT_ENVIRONMENT,
            errors.EXIT_INTERRUPTED} <= DOCUMENTED
    assert len({errors.EXIT_FAILED, errors.EXIT_USAGE, errors.EXIT_ENVIRONMENT,
                errors.EXIT_INTERRUPTED}) == 4
    for cls in CONTENT:
        assert cls("x").exit_code == errors.EXIT_FAILED, cls
    assert InputError("x").exit_code == errors.EXIT_USAGE
    for cls in (NetworkError, EnvironmentFailure):
        assert cls("x").exit_code == errors.EXIT_ENVIRONMENT, cls


@pytest.mark.parametrize("error", [
    InputError("images.txt:3: not a reference"),
    RegistryError("docker.io/library/busybox:1: not found", status=404, code="MANIFEST_UNKNOWN"),
    NetworkError("registry.example: connection refused"),
    DigestMismatch("blobs/sha256/ab: digest sha256:cd, want sha256:ab"),
    PlatformError("docker.io/rancher/x:v1: no linux/amd64"),
    EnvironmentFailure("/out: no space left on device"),
    VerificationFailed("b.tar.zst: 2 problems", report=["a", "b"]),
], ids=lambda e: type(e).__name__)
def test_the_handler_prints_one_line_and_returns_the_errors_code(error, monkeypatch, capsys):
    def failing(args):
        raise error

    monkeypatch.setattr(cli, "_verify", failing)
    assert cli.main(["verify", "b.tar.zst"]) == error.exit_code
    assert capsys.readouterr().err == f"bundler: error: {error}\n"


def test_what_an_error_carries_besides_its_line():
    e = RegistryError("no", status=401, code="UNAUTHORIZED")
    assert (str(e), e.status, e.code) == ("no", 401, "UNAUTHORIZED")
    assert (RegistryError("no").status, RegistryError("no").code) == (None, None)
    assert VerificationFailed("bad", report=["p"]).report == ["p"]


def test_an_oserror_no_module_translated_is_an_environment_failure(tmp_path, monkeypatch,
                                                                     capsys):
    def failing(args):
        open(tmp_path / "missing" / "file")

    monkeypatch.setattr(cli, "_verify", failing)
    assert cli.main(["verify", "b.tar.zst"]) == errors.EXIT_ENVIRONMENT
    assert capsys.readouterr().err == \
        f"bundler: error: {tmp_path / 'missing' / 'file'}: No such file or directory\n"


def _raised(call, *args) -> OSError:
    with pytest.raises(OSError) as e:
        call(*args)
    return e.value


def test_a_full_disk_is_said_plainly():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "wb", buffering=0) as f:
        e = _raised(f.write, b"x")
    assert e.errno == errno.ENOSPC
    assert str(EnvironmentFailure.from_os_error(e, "/dev/full")) == \
        "/dev/full: no space left on device"
    assert str(EnvironmentFailure.from_os_error(e)) == "no space left on device"


def test_a_file_where_a_directory_should_be_is_named(tmp_path):
    blocker = tmp_path / "dist"
    blocker.write_bytes(b"a file")
    for e in (_raised(os.mkdir, blocker), _raised(os.mkdir, blocker / "sub"),
              _raised(os.makedirs, blocker / "a" / "b")):
        assert str(EnvironmentFailure.from_os_error(e, "ignored")) == f"{blocker}: not a directory"


def test_other_failures_keep_the_systems_reason_and_the_file(tmp_path):
    existing = tmp_path / "dist"
    existing.mkdir()
    e = _raised(os.mkdir, existing)
    assert str(EnvironmentFailure.from_os_error(e)) == f"{existing}: File exists"
    e = _raised(open, tmp_path / "nope")
    assert str(EnvironmentFailure.from_os_error(e, "elsewhere")) == \
        f"{tmp_path / 'nope'}: No such file or directory"


def test_non_directory_finds_the_file_in_the_way(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    (tmp_path / "d").mkdir()
    assert errors.non_directory(str(tmp_path / "f" / "x" / "y")) == str(tmp_path / "f")
    assert errors.non_directory(str(tmp_path / "f")) == str(tmp_path / "f")
    assert errors.non_directory(str(tmp_path / "d" / "x" / "y")) is None
    assert errors.non_directory(str(tmp_path / "d")) is None
    os.symlink(tmp_path / "f", tmp_path / "link")
    assert errors.non_directory(str(tmp_path / "link" / "x")) == str(tmp_path / "link")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")  # stands in the way all the same
    assert errors.non_directory(str(tmp_path / "dangling" / "x")) == str(tmp_path / "dangling")


def test_a_cause_some_images_share_is_said_once_with_the_first_of_them():
    shared = "127.0.0.1:1: cannot connect (refused)"
    line = errors.by_cause([(f"r/{n}:1", f"r/{n}:1: GET .../{n}: {shared}", shared)
                            for n in "abcde"]
                           + [("r/f:1", "r/f:1: not found", None),
                              ("r/g:1", "r/g:1: GET ...: other.invalid: no", "other.invalid: no")])
    assert line == (f"7 images failed: {shared} (5 images: r/a:1, r/b:1, r/c:1 and 2 more); "
                    "r/f:1: not found; r/g:1: GET ...: other.invalid: no")


def test_a_cause_every_image_shares_is_said_once_alone():
    line = errors.by_cause([(n, f"{n}: GET {n}: host: down", "host: down") for n in "ab"])
    assert line == "2 images failed, all for one reason: host: down"
    # Causes that differ are each image's own.
    line = errors.by_cause([("a", "a: x", "x"), ("b", "b: y", "y")])
    assert line == "2 images failed: a: x; b: y"
