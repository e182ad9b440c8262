"""`bundler place`: put a verified bundle where K3s imports it, so K3s never sees it half-made.

K3s imports files from `<data-dir>/agent/images` by suffix (dotfiles too), at start and, since
v1.29.13/v1.30.9/v1.31.5/v1.32.0, whenever one appears or changes (fsnotify, 2 s debounce); a
half-written file was imported and failed (k3s PR 10973). So the copy is written under a name
with none of the importable suffixes, flushed, and renamed into place in the same directory.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bundler import verify
from bundler.atomic import fsync_dir, remove_stale, temp_name
from bundler.digest import CHUNK, HashingWriter, hash_rest
from bundler.errors import EnvironmentFailure, InputError, VerificationFailed

DATA_DIRS = {"k3s": "/var/lib/rancher/k3s", "rke2": "/var/lib/rancher/rke2"}
# What K3s imports from agent/images (rancher/wharfie pkg/tarfile), plus .txt, which it reads
# as a list of images to pull: none of our temporary names may end in one of these.
IMPORTED_SUFFIXES = (".tar", ".tar.lz4", ".tar.bz2", ".tbz", ".tar.gz", ".tgz", ".tar.zst",
                     ".tzst", ".txt")
# Room left free beyond the bundle itself, so placing never fills the disk K3s runs on.
_HEADROOM = 64 << 20


@dataclass(frozen=True)
class Placement:
    path: Path
    size: int
    sha256: str
    action: str  # "placed", "replaced", "unchanged", "would place", ...


def images_dir(images_dir: str | None, data_dir: str | None, distro: str) -> Path:
    """--images-dir, else <data-dir>/agent/images, data dir defaulting per distro."""
    if images_dir and data_dir:
        raise InputError("--images-dir and --data-dir exclude each other")
    if distro not in DATA_DIRS:
        raise InputError(f"--distro {distro!r}: want k3s or rke2")
    if images_dir:
        return Path(images_dir)
    return Path(data_dir or DATA_DIRS[distro]) / "agent" / "images"


def place(bundle: str | Path, target_dir: Path, dry_run: bool = False,
          report: verify.Report | None = None) -> Placement:
    """Verify `bundle`, then copy it atomically into `target_dir` (created if missing)."""
    source = Path(bundle)
    if not source.name.endswith(IMPORTED_SUFFIXES[:-1]):
        raise InputError(f"{source}: K3s imports only {', '.join(IMPORTED_SUFFIXES[:-1])} files")
    report = report or verify.verify(source)
    if not report.ok:
        more = len(report.problems) - 1
        also = f"; {more} more, see bundler verify" if more else ""
        raise VerificationFailed(
            f"{source}: did not verify ({report.problems[0]}{also}); nothing placed", report)
    final = target_dir / source.name
    if final.is_file() and final.stat().st_size == report.size and \
            _sha256(final) == report.sha256:
        return Placement(final, report.size, report.sha256, "unchanged")
    action = "replaced" if final.exists() else "placed"
    if dry_run:
        return Placement(final, report.size, report.sha256, f"would be {action}")
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        remove_stale(target_dir)
        _check_space(target_dir, report.size)
        _copy(source, final, report.sha256)
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, str(target_dir)) from None
    return Placement(final, report.size, report.sha256, action)


def _copy(source: Path, final: Path, sha256: str) -> None:
    temp = temp_name(final)
    try:
        with open(source, "rb") as src, open(temp, "xb") as dst:
            copied = HashingWriter(dst)
            shutil.copyfileobj(src, copied, CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
        if copied.hash.hexdigest() != sha256:
            # The source changed after it was verified: what we copied is not what we checked.
            raise VerificationFailed(f"{source}: changed while being placed; nothing placed")
        os.chmod(temp, 0o644)
        os.replace(temp, final)
        fsync_dir(final.parent)
    finally:
        temp.unlink(missing_ok=True)


def _check_space(directory: Path, size: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < size + _HEADROOM:
        raise EnvironmentFailure(
            f"{directory}: {free / 1e6:.0f} MB free, placing needs {(size + _HEADROOM) / 1e6:.0f}"
            " MB (the bundle plus headroom)")


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hash_rest(f).hexdigest()
