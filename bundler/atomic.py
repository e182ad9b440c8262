"""Files that appear under their final names whole, or not at all.

Each output is written under a temporary name in its final directory (so the rename cannot
cross file systems), flushed to disk, and renamed only when every output is complete. The
temporary names end in `.partial`, a suffix K3s never imports (wharfie's tarfile.go list).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from bundler import signals

TEMP_SUFFIX = ".partial"
# .<final name>.<pid>-<random>.partial: the pid tells a later run whether its writer is alive.
_TEMP_RE = re.compile(r"^\..+\.(?P<pid>\d+)-[0-9a-f]+" + re.escape(TEMP_SUFFIX) + "$")


def temp_name(final: Path) -> Path:
    """A fresh temporary name beside `final` that no importer will pick up."""
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def remove_stale(directory: Path, dir_fd: int | None = None) -> None:
    """Remove temporaries in `directory` left by runs that died (their process is gone);
    those of runs still going are theirs to finish.

    With `dir_fd` (the directory, opened), names are looked up and removed relative to it, so
    a path swapped meanwhile cannot send the removal elsewhere; a symlink is removed, never
    followed.
    """
    try:
        entries = list(os.scandir(directory if dir_fd is None else dir_fd))
    except FileNotFoundError:
        return
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if not m or _alive(int(m.group("pid"))):
            continue
        where = entry.path if dir_fd is None else entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                # rmtree takes dir_fd from Python 3.11 on; place writes no directories.
                shutil.rmtree(where, **({"dir_fd": dir_fd} if dir_fd is not None else {}))
            else:
                os.unlink(where, dir_fd=dir_fd)
        except OSError:
            pass  # gone already, or not ours to remove (a sticky directory): leave it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicOutputs:
    """A set of output files committed together; on failure none of them appear.

    Use as a context manager: temp() hands out temporary paths, commit() renames them all to
    their final names; leaving the block without commit() removes every temporary. What a run
    killed outright (SIGKILL, a power cut) left behind is removed when the next one starts.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        remove_stale(directory)
        self._pending: list[tuple[Path, Path]] = []
        self._dirs: list[Path] = []
        self._stale: list[Path] = []

    def temp(self, final_name: str) -> Path:
        final = self.directory / final_name
        path = temp_name(final)
        self._pending.append((path, final))
        return path

    def remove(self, final_name: str) -> None:
        """Remove `final_name` at commit, with the renames: a file an earlier run wrote that
        this one supersedes without writing it again (nothing would vouch for it)."""
        self._stale.append(self.directory / final_name)

    def scratch_dir(self) -> Path:
        """A temporary directory beside the outputs, removed when the block ends."""
        path = temp_name(self.directory / "bundler-scratch")
        path.mkdir()
        self._dirs.append(path)
        return path

    def commit(self) -> list[Path]:
        for path, _ in self._pending:
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        with signals.deferred():  # all the final names, or none of them
            for path, final in self._pending:
                os.replace(path, final)
            for stale in self._stale:
                stale.unlink(missing_ok=True)
        fsync_dir(self.directory)
        done = [final for _, final in self._pending]
        self._pending = []
        return done

    def __enter__(self) -> AtomicOutputs:
        return self

    def __exit__(self, *exc: object) -> None:
        for path, _ in self._pending:
            path.unlink(missing_ok=True)
        for d in self._dirs:
            # A download thread still running after an interrupt may add a file while the
            # tree is removed, which leaves the directory: a second pass takes it.
            for _ in range(3):
                shutil.rmtree(d, ignore_errors=True)
                if not d.exists():
                    break
