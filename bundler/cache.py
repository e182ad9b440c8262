"""A content-addressed blob store on disk: `<root>/sha256/<hex>`, written only when verified.

Entries appear under their final name by rename, after the bytes were checked against the
digest that names them; a reader therefore sees a whole, verified blob or nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from bundler.digest import hex_of


class BlobStore:
    """Blobs keyed by digest under `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / hex_of(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        return open(self.path(digest), "rb")

    def writer(self) -> PendingBlob:
        """A temporary file in the store; commit(digest) names it, close() drops it."""
        return PendingBlob(self)


class PendingBlob:
    """A blob being written; it becomes visible only through commit()."""

    def __init__(self, store: BlobStore):
        self._store = store
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=store.root)
        self._file = os.fdopen(fd, "wb")
        self._name = name
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return self._file.write(data)

    def commit(self, digest: str) -> None:
        """Call only after the bytes were checked against `digest`."""
        self._file.close()
        os.replace(self._name, self._store.path(digest))
        self._name = ""

    def __enter__(self) -> PendingBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()
        if self._name:
            os.unlink(self._name)
