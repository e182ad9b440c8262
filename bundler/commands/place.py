"""`bundler place`: put a verified bundle where K3s imports it, so K3s never sees it half-made.

K3s imports files from `<data-dir>/agent/images` by suffix (dotfiles too), at start and, since
v1.29.13/v1.30.9/v1.31.5/v1.32.0, whenever one appears or changes (fsnotify, 2 s debounce); a
half-written file was imported and failed (k3s PR 10973). So the copy is written under a name
with none of the importable suffixes, flushed, and renamed into place in the same directory.

place runs as root into a directory K3s trusts, so it works by file descriptor: the
directory is opened once and every name is looked up relative to it, the copy is made through
the descriptor it was created with (O_EXCL|O_NOFOLLOW), and a name is never followed. A
directory other users may write to without the sticky bit is refused: there, anyone could swap
the temporary for a symlink between our check and our rename.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from bundler import localfile
from bundler.atomic import remove_stale, temp_name
from bundler.bundleformat import compress, parts
from bundler.checks import verify
from bundler.digest import CHUNK, HashingWriter, hash_rest
from bundler.errors import EnvironmentFailure, InputError, VerificationFailed

DATA_DIRS = {"k3s": "/var/lib/rancher/k3s", "rke2": "/var/lib/rancher/rke2"}
# What K3s imports from agent/images (rancher/wharfie pkg/tarfile), plus .txt, which it reads
# as a list of images to pull: none of our temporary names may end in one of these.
IMPORTED_SUFFIXES = (".tar", ".tar.lz4", ".tar.bz2", ".tbz", ".tar.gz", ".tgz", ".tar.zst",
                     ".tzst", ".txt")
# Room left free beyond the bundle itself, so placing never fills the disk K3s runs on.
_HEADROOM = 64 << 20
_HEADROOM_TEXT = "64 MiB"


@dataclass(frozen=True)
class Placement:
    path: Path
    size: int
    sha256: str
    action: str  # "placed", "replaced", "unchanged", "would place", ...
    warnings: tuple[str, ...] = ()


def images_dir(images_dir: str | None, data_dir: str | None, distro: str) -> Path:
    """--images-dir, else <data-dir>/agent/images, data dir defaulting per distro."""
    if images_dir and data_dir:
        raise InputError("--images-dir and --data-dir exclude each other")
    if distro not in DATA_DIRS:
        raise InputError(f"--distro {distro!r}: want k3s or rke2")
    if images_dir:
        return Path(images_dir)
    return Path(data_dir or DATA_DIRS[distro]) / "agent" / "images"


def _verified(source: Path, report: verify.Report | None, key: str | Path | None,
              allow_rename: bool, not_before: datetime | None
              ) -> tuple[Path, Callable[[Path], BinaryIO], verify.Report]:
    """The file that lands (a parts list's whole, read from its checked parts), how to open
    it, and its verify report; VerificationFailed, or InputError for a name K3s would not
    import, before anything is written."""
    open_source: Callable[[Path], BinaryIO] = localfile.open_regular
    if parts.is_parts_list(source):
        from bundler.commands import split

        source, open_source, report = split.for_place(source, key=key,
                                                      allow_rename=allow_rename,
                                                      not_before=not_before)
    if unimportable := compress.unimportable_name(source.name):
        raise InputError(f"{source}: {unimportable}")
    report = report or verify.verify(source, key=key, allow_rename=allow_rename,
                                     not_before=not_before)
    if not report.ok:
        more = report.problem_count - 1
        also = f"; {more} more, see bundler verify" if more else ""
        raise VerificationFailed(
            f"{source}: did not verify ({report.problems[0]}{also}); nothing placed", report)
    return source, open_source, report


def place(bundle: str | Path, target_dir: Path, dry_run: bool = False,
          report: verify.Report | None = None, *, key: str | Path | None = None,
          allow_rename: bool = False, not_before: datetime | None = None,
          check_import_space: bool = True,
          before_rename: Callable[[str], object] | None = None) -> Placement:
    """Verify `bundle` (its checksum manifest signed with the public `key`, if given, for a
    file of this name unless `allow_rename`, and dated at or after `not_before`, if given: as
    verify.verify checks them), then copy it atomically into `target_dir` (created if
    missing). Before copying, the free space is checked: the bundle in `target_dir`, and
    (unless not `check_import_space`) what importing it stores in containerd's root beside
    it (containerd_root), each with headroom; EnvironmentFailure with the numbers otherwise.

    `before_rename` is a test hook: called with the temporary's name (in `target_dir`) after
    the copy is complete and before it is checked and renamed, where an attacker would act.
    """
    source, open_source, report = _verified(Path(bundle), report, key, allow_rename,
                                            not_before)
    name = source.name
    final = target_dir / name
    try:
        dir_fd = _open_dir(target_dir, create=not dry_run)
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, str(target_dir)) from None
    if dir_fd is None:  # a dry run, and the directory does not exist yet
        return Placement(final, report.size, report.sha256, "would be placed")
    try:
        _check_dir(dir_fd, target_dir)
        if _same_file(dir_fd, name, report.size, report.sha256):
            return Placement(final, report.size, report.sha256, "unchanged")
        old_size = _size(dir_fd, name)
        action = "placed" if old_size is None else "replaced"
        if dry_run:
            return Placement(final, report.size, report.sha256, f"would be {action}")
        remove_stale(target_dir, dir_fd=dir_fd)
        _check_space(dir_fd, target_dir, report.size)
        if check_import_space:
            _check_import_space(dir_fd, target_dir, report)
        _copy(source, dir_fd, target_dir, name, report.size, report.sha256, before_rename,
              open_source)
    except OSError as e:
        if isinstance(e.filename, str) and "/" not in e.filename:
            e.filename = str(target_dir / e.filename)  # a name relative to dir_fd
        raise EnvironmentFailure.from_os_error(e, str(target_dir)) from None
    finally:
        os.close(dir_fd)
    warnings = (_same_size_warning(final),) if old_size == report.size else ()
    return Placement(final, report.size, report.sha256, action, warnings)


def _open_dir(directory: Path, create: bool) -> int | None:
    """The target directory, opened without following a symlink at its own name.

    A symlinked images directory is refused rather than followed: whoever can change the link
    decides where root writes. The operator can name the real directory instead.
    """
    if create:
        try:
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        except FileExistsError:
            pass  # a file or a symlink there: said below, in words that fit
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
    if os.path.islink(directory):
        raise EnvironmentFailure(
            f"{directory}: is a symlink (to {os.readlink(directory)}); place does not follow "
            "it: give the directory it points to as --images-dir")
    raise EnvironmentFailure(f"{directory}: is not a directory")


def _check_dir(dir_fd: int, directory: Path) -> None:
    """Refuse a directory where someone other than root or us could swap the files in it,
    as sshd refuses loose authorized_keys (StrictModes)."""
    st = os.fstat(dir_fd)
    if st.st_uid not in (0, os.geteuid()):
        raise EnvironmentFailure(
            f"{directory}: owned by uid {st.st_uid}, neither root nor us: its owner could swap "
            "the file K3s imports; nothing placed")
    loose = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if loose and not st.st_mode & stat.S_ISVTX:
        who = "group and others" if loose == stat.S_IWGRP | stat.S_IWOTH else \
            "group" if loose == stat.S_IWGRP else "others"
        raise EnvironmentFailure(
            f"{directory}: writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}) without the "
            f"sticky bit: another user could swap the file K3s imports; `chmod go-w "
            f"{directory}` (or `chmod +t`), then place again; nothing placed")


def _size(dir_fd: int, name: str) -> int | None:
    """The size of what stands at `name` (not followed), None when nothing does."""
    try:
        return os.lstat(name, dir_fd=dir_fd).st_size
    except FileNotFoundError:
        return None


def _same_size_warning(final: Path) -> str:
    # The watcher re-imports a changed file only when its size changed (with a newer mtime),
    # and .cache.json skips it by path, size and mtime: until July 2026 a replacement of the
    # same size was never imported (k3s 14284). Nothing is written to make it so: any file
    # K3s would read in agent/images is one it imports or pulls.
    return (f"{final}: replaced a file of the same size; K3s releases from before July 2026 "
            "skip such a replacement (k3s 14284): place a changed bundle under a new file "
            "name, or restart K3s, and check with bundler status")


def _same_file(dir_fd: int, name: str, size: int, sha256: str) -> bool:
    """Whether `name` is a regular file with exactly these bytes; a symlink there is never
    followed (it is replaced), and a FIFO swapped in is not waited on (O_NONBLOCK)."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return False
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        if not _same_inode(os.fstat(fd), st):
            return False
        return hash_rest(f).hexdigest() == sha256


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and stat.S_ISREG(b.st_mode)


def _copy(source: Path, dir_fd: int, directory: Path, name: str, size: int, sha256: str,
          before_rename: Callable[[str], object] | None,
          open_source: Callable[[Path], BinaryIO] = localfile.open_regular) -> None:
    temp = temp_name(Path(name)).name
    fd = None
    try:
        # Inside the try: a Ctrl-C that lands as open() returns still removes the file.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
        # The source is opened again: it may have been swapped since it was verified (for a
        # FIFO, which would hang us, or /dev/zero, which would fill the disk), so only a
        # regular file is read, and only as many bytes as were verified.
        with open_source(source) as src, \
                os.fdopen(fd, "wb", closefd=False) as dst:
            copied = HashingWriter(dst)
            left = size
            while left and (chunk := src.read(min(CHUNK, left))):
                copied.write(chunk)
                left -= len(chunk)
            longer = bool(src.read(1))
        if left or longer or copied.hash.hexdigest() != sha256:
            # The source changed after it was verified: what we copied is not what we checked.
            raise VerificationFailed(f"{source}: changed while being placed; nothing placed")
        os.fchmod(fd, 0o644)
        os.fsync(fd)
        if before_rename:
            before_rename(temp)
        ours = os.fstat(fd)
        if not _same_inode(ours, os.lstat(temp, dir_fd=dir_fd)):
            raise EnvironmentFailure(
                f"{directory / temp}: replaced by someone else while being placed; nothing "
                "placed")
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        _check_placed(dir_fd, directory, name, ours)
        os.fsync(dir_fd)
    finally:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(temp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


def _check_placed(dir_fd: int, directory: Path, name: str, ours: os.stat_result) -> None:
    """After the rename, the final name must be a regular file: if something was swapped in
    between our check and our rename, take it out again rather than leave it for K3s. (A
    different regular file is another place of the same name finishing after us.)"""
    st = os.lstat(name, dir_fd=dir_fd)
    if not _same_inode(ours, st) and not stat.S_ISREG(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        raise EnvironmentFailure(
            f"{directory / name}: replaced by someone else while being placed; removed it")


def _check_space(dir_fd: int, directory: Path, size: int) -> None:
    fs = os.fstatvfs(dir_fd)
    free = fs.f_bavail * fs.f_frsize
    if free < size + _HEADROOM:
        raise EnvironmentFailure(
            f"{directory}: {free / 1e6:.0f} MB free, placing needs {(size + _HEADROOM) / 1e6:.0f}"
            f" MB (the bundle plus {_HEADROOM_TEXT} headroom)")


class ImportSpace(EnvironmentFailure):
    """containerd's root has too little free space for the import (exit 3)."""


def containerd_root(images_dir: Path) -> Path:
    """Where K3s's (and RKE2's) containerd keeps content and snapshots: agent/containerd,
    beside agent/images; often on the same small root disk (K3s discussion 14676)."""
    return images_dir.parent / "containerd"


def _check_import_space(dir_fd: int, directory: Path, report: verify.Report) -> None:
    """What importing stores in containerd's root: every blob in the content store, and every
    layer unpacked into a snapshot (overlayfs keeps each layer's files once: about its
    uncompressed tar). Measured by verify as it read the bundle; an overestimate where
    containerd already holds some of the layers."""
    root = containerd_root(directory)
    where = root
    while not where.exists() and where != where.parent:
        where = where.parent  # the file system it will be created on
    fs = os.statvfs(where)
    free = fs.f_bavail * fs.f_frsize
    need = report.blob_bytes + report.unpacked_bytes + _HEADROOM
    same_disk = os.stat(where).st_dev == os.fstat(dir_fd).st_dev
    if same_disk:
        need += report.size
    if free < need:
        also = " and the bundle's copy on the same file system" if same_disk else ""
        raise ImportSpace(
            f"{root}: {free / 1e6:.1f} MB free, importing needs {need / 1e6:.1f} MB "
            f"({report.blob_bytes / 1e6:.1f} MB of blobs, {report.unpacked_bytes / 1e6:.1f} MB "
            f"unpacked, {_HEADROOM_TEXT} headroom{also}); nothing placed")
