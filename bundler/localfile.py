"""Local files named by a user or found beside a bundle, opened so they cannot hang or flood us.

A path can be a FIFO (open blocks forever), a device (`/dev/zero` never ends) or a symlink
someone planted beside a bundle to make a root-run verify read another file. Only regular files
are read, small ones with a cap, and files we found (rather than were given) never through a
symlink.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

from bundler.errors import EnvironmentFailure, InputError


def open_regular(path: Path, *, follow_symlinks: bool = True) -> BinaryIO:
    """`path` opened for reading; InputError unless it is a regular file.

    OSError (missing, permission denied) passes through for the caller to word.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not block the open
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise InputError(f"{path}: is a symbolic link; not followed") from None
        raise
    # Built by hand, not os.fdopen: a Ctrl-C inside fdopen, once its FileIO owns the fd, closed
    # it there and again here, and "Bad file descriptor" replaced the KeyboardInterrupt. Here
    # the fd has one owner at a time, and that owner closes it.
    raw = None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: not a regular file ({_kind(mode)})")
        os.set_blocking(fd, True)
        raw = io.FileIO(fd, "rb")
        return io.BufferedReader(raw)
    except BaseException:
        if raw is not None:
            raw.close()
        else:
            os.close(fd)
        raise


def read_small(path: Path, cap: int, kind: str, *, follow_symlinks: bool = True) -> bytes:
    """The whole of a small regular file; InputError if it is larger than `cap` bytes."""
    with open_regular(path, follow_symlinks=follow_symlinks) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise InputError(f"{path}: more than {cap} bytes, too large for a {kind}")
    return data


def read_text(path: str | Path, cap: int, kind: str, a_kind: str) -> str:
    """The UTF-8 text of a file the user named (an image list, a registries.yaml), at most
    `cap` bytes; one-line errors that say what the file should have been (`kind`, and with
    its article `a_kind`). Followed as the shell gives it: `--images <(...)` is a FIFO."""
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such {kind}") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not {a_kind}") from None
    except OSError as e:
        raise EnvironmentFailure(f"{path}: {e.strerror}") from None
    if len(data) > cap:
        raise InputError(f"{path}: larger than {cap >> 20} MiB; not {a_kind}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"
