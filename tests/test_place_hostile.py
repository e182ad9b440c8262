"""place into a directory other users can reach: it works by descriptor, never by a name that
someone else could have swapped."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from bundler.commands import place
from bundler.errors import EnvironmentFailure
from tests.cli_helpers import assert_one_line_error, bundler
from tests.conftest import BUNDLE, STEM

NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


@pytest.fixture
def victim(tmp_path) -> Path:
    """A root-only file an attacker would like root to chmod or K3s to import."""
    path = tmp_path / "secret"
    path.write_bytes(b"root's secret\n")
    path.chmod(0o600)
    return path


def _images(tmp_path: Path, mode: int) -> Path:
    target = tmp_path / "images"
    target.mkdir()
    target.chmod(mode)  # chmod, not mkdir's mode: the umask would take bits away
    return target


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_directory_others_can_write_is_refused(builds, tmp_path, mode):
    target = _images(tmp_path, mode)
    run = bundler("place", str(builds["p1"] / BUNDLE), "--images-dir", str(target))
    assert_one_line_error(run, str(target), f"{mode:04o}", "sticky", "nothing placed")
    assert run.code == 3
    assert os.listdir(target) == []


def test_dry_run_refuses_too(builds, tmp_path):
    target = _images(tmp_path, 0o777)
    run = bundler("place", str(builds["p1"] / BUNDLE), "--images-dir", str(target), "--dry-run")
    assert_one_line_error(run, "sticky")
    assert run.code == 3


def test_sticky_directory_is_allowed(builds, tmp_path):
    target = _images(tmp_path, 0o1777)
    done = place.place(builds["p1"] / BUNDLE, target)
    assert done.action == "placed"
    assert (target / BUNDLE).read_bytes() == (builds["p1"] / BUNDLE).read_bytes()
    assert stat.S_IMODE((target / BUNDLE).stat().st_mode) == 0o644


@needs_root
def test_directory_owned_by_another_user_is_refused(builds, tmp_path):
    target = _images(tmp_path, 0o755)
    os.chown(target, NOBODY, NOBODY)
    run = bundler("place", str(builds["p1"] / BUNDLE), "--images-dir", str(target))
    assert_one_line_error(run, str(target), f"uid {NOBODY}")
    assert run.code == 3 and os.listdir(target) == []


def test_symlinked_images_dir_is_refused_not_followed(builds, tmp_path):
    real = _images(tmp_path, 0o755)
    link = tmp_path / "link"
    link.symlink_to(real)
    run = bundler("place", str(builds["p1"] / BUNDLE), "--images-dir", str(link))
    assert_one_line_error(run, str(link), "symlink", str(real))
    assert run.code == 3 and os.listdir(real) == []


def test_symlink_at_final_name_is_replaced_never_followed(builds, tmp_path, victim):
    target = _images(tmp_path, 0o755)
    (target / BUNDLE).symlink_to(victim)
    before = victim.read_bytes()
    done = place.place(builds["p1"] / BUNDLE, target)
    assert done.action == "replaced"
    assert not (target / BUNDLE).is_symlink()
    assert (target / BUNDLE).read_bytes() == (builds["p1"] / BUNDLE).read_bytes()
    assert victim.read_bytes() == before and stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_symlink_to_identical_bundle_is_not_unchanged(builds, tmp_path):
    # The "unchanged" check must not look through a symlink: K3s would import whatever the
    # link points to later, and its target is not ours to vouch for.
    target = _images(tmp_path, 0o755)
    (target / BUNDLE).symlink_to(builds["p1"] / BUNDLE)
    done = place.place(builds["p1"] / BUNDLE, target)
    assert done.action == "replaced"
    assert not (target / BUNDLE).is_symlink()


def test_symlink_swapped_onto_the_temporary_is_caught(builds, tmp_path, victim):
    """The race: between the copy and the rename, a symlink to a root-only file is
    renamed onto the temporary. The old place chmodded its target to 0644 and renamed the
    symlink into place. Now the swap is seen before the rename: the bundle placed before
    stays as it was."""
    target = _images(tmp_path, 0o755)
    place.place(builds["u1"] / BUNDLE, target)
    before = (target / BUNDLE).stat()

    def swap(temp: str) -> None:
        planted = target / ".planted"
        planted.symlink_to(victim)
        os.rename(planted, target / temp)

    with pytest.raises(EnvironmentFailure, match="replaced by someone else.*nothing placed"):
        place.place(builds["p1"] / BUNDLE, target, before_rename=swap)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert victim.read_bytes() == b"root's secret\n"
    after = (target / BUNDLE).stat(follow_symlinks=False)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (target / BUNDLE).read_bytes() == (builds["u1"] / BUNDLE).read_bytes()
    assert os.listdir(target) == [BUNDLE]  # the planted symlink went with our temporary's name


def test_swap_after_the_check_is_taken_back_out(builds, tmp_path, victim, monkeypatch):
    """If the swap lands after the identity check, just before the rename, the symlink ends
    under the final name for a moment; place removes it and fails."""
    target = _images(tmp_path, 0o755)
    real_rename = os.rename

    def late_swap(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
        if src_dir_fd is not None and str(src).endswith(".partial"):
            planted = target / ".planted"
            planted.symlink_to(victim)
            real_rename(planted, target / src)
        return real_rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(os, "rename", late_swap)
    with pytest.raises(EnvironmentFailure, match="removed it"):
        place.place(builds["p1"] / BUNDLE, target)
    monkeypatch.undo()
    assert not os.path.lexists(target / BUNDLE)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


@pytest.fixture
def reachable(tmp_path) -> Path:
    """A directory other users can reach (pytest's tmp_path lies under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="bundler-hostile-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@needs_root
def test_other_user_cannot_swap_in_a_sticky_directory(builds, reachable, victim):
    """In a sticky world-writable directory, another user's rename onto root's temporary is
    refused by the kernel; place then finishes as usual."""
    target = _images(reachable, 0o1777)
    outcome = {}

    def swap_as_nobody(temp: str) -> None:
        pid = os.fork()
        if pid == 0:  # the attacker
            code = 1
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                planted = target / ".planted"
                planted.symlink_to(victim)
                try:
                    os.rename(planted, target / temp)
                    code = 0
                except PermissionError:
                    code = 13
                    planted.unlink()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        outcome["exit"] = os.waitstatus_to_exitcode(status)

    done = place.place(builds["p1"] / BUNDLE, target, before_rename=swap_as_nobody)
    assert outcome["exit"] == 13, "the kernel let another user replace root's temporary"
    assert done.action == "placed"
    assert not (target / BUNDLE).is_symlink()
    assert (target / BUNDLE).read_bytes() == (builds["p1"] / BUNDLE).read_bytes()
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_temporary_is_created_exclusively_not_through_a_symlink(builds, tmp_path, victim,
                                                               monkeypatch):
    """A symlink planted at the very name the temporary will get is not written through."""
    target = _images(tmp_path, 0o755)
    fixed = f".{BUNDLE}.{os.getpid()}-0badc0de.partial"
    (target / fixed).symlink_to(victim)
    monkeypatch.setattr(place, "temp_name", lambda final: final.with_name(fixed))
    with pytest.raises(EnvironmentFailure, match=f"^{re.escape(str(target / fixed))}: File exists"):
        place.place(builds["p1"] / BUNDLE, target)
    assert victim.read_bytes() == b"root's secret\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_a_file_where_the_directory_should_be(builds, tmp_path):
    target = tmp_path / "images"
    target.write_text("not a directory")
    run = bundler("place", str(builds["p1"] / BUNDLE), "--images-dir", str(target))
    assert_one_line_error(run, f"{target}: is not a directory")
    assert run.code == 3


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar", ".tar.lz4", ".tgz"])
def test_a_zstd_bundle_under_another_importable_suffix_is_refused(builds, tmp_path, suffix):
    # K3s picks the decompressor by the suffix: zstd bytes named .tar.gz would fail to import
    renamed = tmp_path / f"bundle{suffix}"
    shutil.copy(builds["p1"] / f"{STEM}.tar.zst", renamed)
    run = bundler("place", str(renamed), "--images-dir", str(tmp_path / "images"))
    assert_one_line_error(run, str(renamed), "K3s reads zstd only from .tar.zst or .tzst")
    assert run.code == 2
    assert not (tmp_path / "images").exists()


@pytest.mark.parametrize("swap", ["fifo", "zero"])
def test_a_source_swapped_after_verify_is_not_read_forever(builds, tmp_path, swap):
    source = tmp_path / "src" / f"{STEM}.tar.zst"
    source.parent.mkdir()
    shutil.copy(builds["p1"] / f"{STEM}.tar.zst", source)
    report = place.verify.verify(builds["p1"] / f"{STEM}.tar.zst")
    source.unlink()
    if swap == "fifo":
        os.mkfifo(source)  # an open() without O_NONBLOCK would wait for a writer forever
    else:
        source.symlink_to("/dev/zero")  # endless: copying to EOF would fill the disk
    images = tmp_path / "images"
    with pytest.raises(place.InputError, match="not a regular file"):
        place.place(source, images, report=report)
    assert not images.exists() or list(images.iterdir()) == []
