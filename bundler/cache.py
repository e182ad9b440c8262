"""Content-addressed stores on disk, written only when verified, shared safely between runs.

BlobStore keeps blobs as `<root>/sha256/<hex>`; FrameCache keeps compressed zstd frames under
the key of what they compress. Entries are written under a temporary name (with our pid, so a
later run can remove what a dead run left) and renamed into place after their bytes were
checked: a reader sees a whole entry or none, and two builds sharing a cache cannot corrupt
it. Entries are checked again when read, and a corrupt one is dropped, to be fetched again.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

from bundler.atomic import remove_stale, temp_name
from bundler.digest import CHUNK, VerifyingReader, hash_rest, hex_of, sha256_digest
from bundler.errors import EnvironmentFailure, InputError, non_directory
from bundler.localfile import open_regular


class CacheUnusable(EnvironmentFailure):
    """The cache directory cannot be created or written to.

    Raised before any download, so the user can point the cache elsewhere at no cost; the
    message says it is the cache (a bare "Permission denied" on a path the user never named
    does not). The command line, not this library, adds which options choose another.
    """

    def __init__(self, directory: str | Path, reason: str):
        super().__init__(f"cache directory {directory}: {reason}")
        self.directory = str(directory)


def default_dir() -> Path:
    """$XDG_CACHE_HOME/bundler, else ~/.cache/bundler (the XDG base directory default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "bundler"


def prepare(directory: str | Path) -> None:
    """Make `directory` ready to be a cache, or CacheUnusable, before anything is fetched.

    A cache is read back as input to what build signs, so only its owner may change it: a
    directory that is ours is created 0700 (its entries are the layers of private images
    too); one that another user owns or that group or others may write is refused, and so is
    one whose parents someone else could rename it out of (sshd's StrictModes rule: every
    parent owned by us or root, and writable by no one else unless sticky).
    """
    directory = Path(directory)
    _prepare(directory)
    for parent in _parents(directory):
        try:
            st = os.stat(parent)
        except OSError as e:
            raise CacheUnusable(directory, f"{parent}: {_reason(e)}") from None
        if st.st_uid not in (os.geteuid(), 0):
            raise CacheUnusable(directory, f"its parent {parent} is owned by another user "
                                           f"(uid {st.st_uid}), who could replace the cache")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise CacheUnusable(directory, f"its parent {parent} is writable by "
                                           f"{_who(st.st_mode)} (mode "
                                           f"{stat.S_IMODE(st.st_mode):04o}), who could "
                                           "replace the cache")


def _parents(directory: Path) -> list[Path]:
    """The parents of `directory`, as named and as resolved (a symlink's own directory
    decides who can point it elsewhere), each once."""
    seen: list[Path] = []
    for path in (Path(os.path.abspath(directory)), directory.resolve()):
        for parent in path.parents:
            if parent not in seen:
                seen.append(parent)
    return seen


def _prepare(directory: Path, *, ours: bool = False) -> None:
    """Create `directory` (0700) if needed, check who may write it, and that we can.
    `ours`: a directory bundler names inside the cache: never a symlink, and closed to
    others if it is not (an older bundler made them 0755)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CacheUnusable(non_directory(str(directory)) or directory, "not a directory"
                            ) from None
    except OSError as e:
        # What cannot be written to is the directory the new one would go into.
        where = Path(e.filename).parent if e.filename and e.errno == errno.EACCES else None
        raise CacheUnusable(where or e.filename or directory, _reason(e)) from None
    if ours and directory.is_symlink():
        raise CacheUnusable(directory, "a symbolic link, not a directory bundler made; "
                                       "remove it")
    _check_owner(directory)
    if ours and stat.S_IMODE(directory.stat().st_mode) & 0o077:
        try:
            directory.chmod(0o700)
        except OSError as e:
            raise CacheUnusable(directory, _reason(e)) from None
    # mkdir succeeds on an existing directory we cannot write; the first entry would then
    # fail half-way through the build.
    probe = temp_name(directory / "probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as e:
        raise CacheUnusable(directory, _reason(e)) from None


def _check_owner(directory: Path) -> None:
    try:
        st = directory.stat()
    except OSError as e:
        raise CacheUnusable(directory, _reason(e)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise CacheUnusable(directory, "not a directory")
    if st.st_uid != os.geteuid():
        raise CacheUnusable(directory, f"owned by another user (uid {st.st_uid}), who could "
                                       "plant entries in it")
    if st.st_mode & 0o022:
        raise CacheUnusable(directory, f"writable by {_who(st.st_mode)} (mode "
                                       f"{stat.S_IMODE(st.st_mode):04o}), who could plant "
                                       "entries in it")


def _who(mode: int) -> str:
    return " and ".join(who for who, bit in (("group", 0o020), ("others", 0o002)) if mode & bit)


def _reason(e: OSError) -> str:
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.ENOSPC:
        return "no space left on device"
    return (e.strerror or str(e)).lower()


class _Pending:
    """A file being written under a temporary name; commit() renames it, close() drops it."""

    def __init__(self, final: Path):
        self.final = final
        self.path = temp_name(final)
        # 0600: entries are the layers of private images as well as public ones.
        self.file = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                              "wb")
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        try:
            return self.file.write(data)
        except OSError as e:
            if e.filename:
                raise
            # A write names no file: without this, a full cache disk is reported against the
            # output directory the build was writing, not the cache that filled up.
            raise OSError(e.errno, e.strerror, str(self.final.parent)) from None

    def commit(self, final: Path | None = None) -> None:
        self.file.close()
        os.replace(self.path, final or self.final)
        self.path = None

    def close(self) -> None:
        """Drop the temporary unless it was committed."""
        self.file.close()
        if self.path:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> _Pending:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The largest manifest or config read whole from the cache (the registry source's own cap).
MAX_SMALL = 8 << 20


class BlobStore:
    """Blobs keyed by digest under `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._dir = self.root / "sha256"
        _prepare(self.root, ours=True)
        _prepare(self._dir, ours=True)
        remove_stale(self._dir)

    def path(self, digest: str) -> Path:
        return self._dir / hex_of(digest)

    # Every entry is reached without following a symlink and only if it is a regular file: a
    # planted symlink or FIFO could answer one read one way and the next another, or never.

    def _stat(self, digest: str) -> os.stat_result | None:
        try:
            st = os.lstat(self.path(digest))
        except FileNotFoundError:
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def has(self, digest: str) -> bool:
        """Whether a regular file stands under `digest` (not whether it is right: see open)."""
        return self._stat(digest) is not None

    def size(self, digest: str) -> int:
        st = self._stat(digest)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, "no such cache entry", str(self.path(digest)))
        return st.st_size

    def _open(self, digest: str) -> BinaryIO | None:
        try:
            return open_regular(self.path(digest), follow_symlinks=False)
        except FileNotFoundError:
            return None
        except (OSError, InputError):
            self.path(digest).unlink(missing_ok=True)  # not an entry we wrote
            return None

    def verified(self, digest: str) -> bool:
        """Whether the entry exists and still hashes to its name; a corrupt one is removed."""
        f = self._open(digest)
        if f is None:
            return False
        with f:
            actual = "sha256:" + hash_rest(f).hexdigest()
        if actual == digest:
            return True
        self.path(digest).unlink(missing_ok=True)
        return False

    def open(self, digest: str) -> BinaryIO:
        """The entry's bytes, checked against its digest as they are read."""
        path = self.path(digest)
        f = self._open(digest)
        if f is None:
            raise FileNotFoundError(errno.ENOENT, "no such cache entry", str(path))
        return VerifyingReader(f, digest, os.fstat(f.fileno()).st_size, str(path))

    def read_small(self, digest: str, cap: int = MAX_SMALL) -> bytes | None:
        """A small entry (manifest, config) if present, at most `cap` bytes and intact, else
        None. The bytes returned are the bytes hashed: one open, one read."""
        f = self._open(digest)
        if f is None:
            return None
        with f:
            data = f.read(cap + 1)
        if len(data) <= cap and sha256_digest(data) == digest:
            return data
        if len(data) <= cap:
            self.path(digest).unlink(missing_ok=True)
        return None

    def put(self, digest: str, data: bytes) -> None:
        """Store a small document already checked against `digest`."""
        with self.writer() as pending:
            pending.write(data)
            pending.commit(self.path(digest))

    def writer(self) -> _Pending:
        """A temporary entry; commit(path(digest)) once its bytes were checked."""
        return _Pending(self._dir / "blob")


# An entry is this line, then one zstd frame. The frame is checked against what it must
# decompress to each time it is used (compress.copy_checked), never against anything stored
# beside it: whoever can write the cache could write that too.
_FRAME_MAGIC = b"bundler-frame-2\n"


class FrameCache:
    """Compressed zstd frames keyed by what they compress (see compress.FrameGroup.key)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        _prepare(self.root, ours=True)
        remove_stale(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> bool:
        """Whether there is an entry for `key` (not whether it is right: see open)."""
        f = self.open(key)
        if f is None:
            return False
        f.close()
        return True

    def open(self, key: str) -> BinaryIO | None:
        """The entry for `key`, positioned at its frame, or None; the caller checks the
        frame as it copies it (compress.copy_checked) and drops it if it is wrong."""
        try:
            f = open_regular(self._path(key), follow_symlinks=False)
        except (OSError, InputError):
            return None
        if f.read(len(_FRAME_MAGIC)) != _FRAME_MAGIC:
            f.close()
            return None
        return f

    def drop(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def writer(self, key: str) -> PendingFrame:
        return PendingFrame(self._path(key))

    def put(self, key: str, frame: Path) -> None:
        """Keep a copy of the frame in the file `frame` for `key`."""
        pending = self.writer(key)
        try:
            with open(frame, "rb") as f:
                shutil.copyfileobj(f, pending, CHUNK)
            pending.commit()
        finally:
            pending.close()


class PendingFrame:
    """A frame being compressed into the cache as it is written to the bundle."""

    def __init__(self, final: Path):
        self._pending = _Pending(final)
        self._pending.write(_FRAME_MAGIC)

    def write(self, data: bytes) -> None:
        self._pending.write(data)

    def commit(self) -> None:
        self._pending.commit()

    def close(self) -> None:
        self._pending.close()
