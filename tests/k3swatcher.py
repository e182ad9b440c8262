"""A stand-in for K3s's agent/images watcher, importing into the tests' real containerd.

K3s is not on these machines. What its watcher does (shared/k3s-airgap-facts.md): it notices
a file with an importable suffix that is new, or whose size changed, waits out a short
debounce, imports it into namespace k8s.io with all platforms, and labels every image it
imported pinned (io.cri-containerd.pinned and io.cattle.k3s.pinned). The stand-in does the same
with `ctr`, polling instead of fsnotify. What status and place --wait then read is the real
containerd. `same_size_skips` keeps the old K3s behaviour a same-size replacement meets
(k3s 14284): a file whose size did not change is not imported again.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path

import zstandard

from bundler.commands.place import IMPORTED_SUFFIXES
from tests.servers import Containerd

PINNED = ("io.cri-containerd.pinned=pinned", "io.cattle.k3s.pinned=pinned")
_UNPACKED = re.compile(r"^unpacking (\S+) \(sha256:[0-9a-f]{64}\)", re.MULTILINE)


class Watcher:
    def __init__(self, containerd: Containerd, images_dir: Path, *, debounce: float = 0.5,
                 same_size_skips: bool = False, pin: bool = True, pin_delay: float = 0.0):
        self.containerd = containerd
        self.dir = images_dir
        self.debounce = debounce
        self.same_size_skips = same_size_skips
        self.pin = pin
        self.pin_delay = pin_delay  # between the import and the labels, as a slow K3s
        self.imported: list[str] = []  # file names, in the order imported
        self.errors: list[str] = []
        self._seen: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="k3s-watcher")

    def __enter__(self) -> Watcher:
        self._scan(record_only=True)  # what is there before K3s "starts" counts as seen
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._scan()

    def _scan(self, record_only: bool = False) -> None:
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.endswith(IMPORTED_SUFFIXES) or entry.name.endswith(".txt"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            now, before = (st.st_size, st.st_mtime_ns), self._seen.get(entry.name)
            self._seen[entry.name] = now
            if record_only or now == before:
                continue
            if before and self.same_size_skips and before[0] == now[0]:
                continue
            if not self._stop.wait(self.debounce):
                self._import(Path(entry.path))

    def _import(self, path: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="k3s-import-") as tmp:
            tar = Path(tmp) / "bundle.tar"
            with open(path, "rb") as src, open(tar, "wb") as dst:
                zstandard.ZstdDecompressor().copy_stream(src, dst)
            done = self.containerd.ctr("images", "import", "--all-platforms", "--snapshotter",
                                       "native", str(tar))
        if done.returncode != 0:
            self.errors.append(f"{path.name}: {done.stderr.strip()}")
            return
        if self.pin and not self._stop.wait(self.pin_delay):
            for name in _UNPACKED.findall(done.stdout):
                self.containerd.ctr("images", "label", name, *PINNED, check=True)
        self.imported.append(path.name)
