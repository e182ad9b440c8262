"""`bundler status`: did K3s import the bundle? Its images against containerd's records.

For every image of the bundle, containerd's namespace k8s.io (where K3s imports) is asked for
the image's full name: imported when the name points at the bundle's manifest digest, with the
pinned label or without it; missing; or present with another digest. `place --wait` runs the
same check until it passes or the time is up. The failures this catches are real: an import
that failed only in K3s's log, a same-size replacement K3s skipped (k3s 14284), pinned labels
lost with `.cache.json` (k3s 14265).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bundler import containerd

IMPORTED, MISSING, OTHER = "imported", "missing", "other digest"
# How long place --wait waits for the pinned labels once every image is imported.
PIN_GRACE = 5.0


@dataclass(frozen=True)
class ImageState:
    name: str
    want: str  # the bundle's manifest digest
    state: str  # IMPORTED, MISSING or OTHER
    digest: str | None = None  # where containerd's name points, if it has the name
    pinned: bool | None = None

    def as_json(self) -> dict:
        return {"name": self.name, "state": self.state, "bundleDigest": self.want,
                "containerdDigest": self.digest, "pinned": self.pinned}


@dataclass(frozen=True)
class Status:
    bundle: str
    socket: str
    images: tuple[ImageState, ...]

    @property
    def ok(self) -> bool:
        return all(i.state == IMPORTED for i in self.images)

    @property
    def not_imported(self) -> list[ImageState]:
        return [i for i in self.images if i.state != IMPORTED]

    def as_json(self) -> dict:
        return {"bundle": self.bundle, "containerd": self.socket,
                "namespace": containerd.NAMESPACE, "ok": self.ok,
                "images": [i.as_json() for i in self.images]}


def bundle_images(bundle: Path) -> list[tuple[str, str]]:
    """(full name, manifest digest) of each image the bundle's metadata names: the name K3s
    imports it under (io.containerd.image.name) and the digest the name must point at."""
    from bundler.sources import bundle as source

    return [(e.name or str(e.reference), e.manifest.digest)
            for e in source.read_metadata(bundle).entries]


def compare(bundle: str, socket: str, wanted: list[tuple[str, str]],
            found: Mapping[str, containerd.ImageRecord]) -> Status:
    """Each wanted (name, digest) against containerd's records `found`, in the bundle's order."""
    states = []
    for name, want in dict(wanted).items():
        record = found.get(name)
        if record is None:
            states.append(ImageState(name, want, MISSING))
        else:
            state = IMPORTED if record.digest == want else OTHER
            states.append(ImageState(name, want, state, record.digest, record.pinned))
    return Status(bundle, socket, tuple(states))


def status(bundle: str | Path, socket: str = containerd.DEFAULT_SOCKET) -> Status:
    """The bundle's images as containerd (at `socket`) holds them now."""
    wanted = bundle_images(Path(bundle))
    return compare(str(bundle), socket, wanted, containerd.list_images(socket))


def wait(bundle: str | Path, seconds: float, socket: str = containerd.DEFAULT_SOCKET, *,
         wanted: list[tuple[str, str]] | None = None, interval: float = 0.5,
         clock: Callable[[], float] = time.monotonic) -> Status:
    """status() again every `interval` seconds until every image is imported and pinned, or
    `seconds` have passed; the last Status either way. K3s labels the images just after it
    imports them: once all are imported, the labels get PIN_GRACE seconds more (within
    `seconds`), not the whole time. containerd unreachable ends it at once (its error)."""
    wanted = wanted if wanted is not None else bundle_images(Path(bundle))
    deadline = clock() + seconds
    while True:
        now = compare(str(bundle), socket, wanted, containerd.list_images(socket))
        if now.ok:
            if all(i.pinned for i in now.images):
                return now
            deadline = min(deadline, clock() + PIN_GRACE)
        left = deadline - clock()
        if left <= 0:
            return now
        time.sleep(min(interval, left))


def advice(image: ImageState) -> str:
    """What to look at for an image that is not imported, or imported without the label."""
    if image.state == MISSING:
        return ("not in containerd (namespace k8s.io): K3s imports a new file within seconds "
                "while running (v1.29.13, v1.30.9, v1.31.5, v1.32.0 on), else at its next "
                "start; a failed import shows only in K3s's log (journalctl -u k3s names the file "
                "and the error)")
    if image.state == OTHER:
        return (f"containerd has {image.digest}, the bundle {image.want}: an earlier import "
                "under the same name. K3s skipped a replacement of the same size until July "
                "2026 (k3s 14284): place the changed bundle under a new file name, or restart "
                "K3s")
    if not image.pinned:
        return (f"imported but not pinned ({containerd.PINNED_LABEL}): the kubelet's image GC "
                "may remove it; K3s lost the label when .cache.json skipped a file until July "
                "2026 (k3s 14265)")
    return "imported, pinned"


def render_text(found: Status, within: float | None = None) -> str:
    """One line per image, then the verdict; `within`: the seconds place --wait waited."""
    lines = []
    for image in found.images:
        if image.state == IMPORTED:
            pinned = "pinned" if image.pinned else f"NOT pinned: {advice(image)}"
            lines.append(f"{image.name}: imported ({image.want}), {pinned}")
        else:
            lines.append(f"{image.name}: {image.state}: {advice(image)}")
    total = len(found.images)
    where = f"containerd at {found.socket}, namespace {containerd.NAMESPACE}"
    if found.ok:
        pinned = sum(1 for i in found.images if i.pinned)
        lines.append(f"OK {found.bundle}: {total} of {total} images imported ({where}), "
                     f"{pinned} pinned")
    else:
        late = f" within {within:g} s" if within is not None else ""
        lines.append(f"FAILED {found.bundle}: {len(found.not_imported)} of {total} images not "
                     f"imported{late} ({where})")
    return "".join(line + "\n" for line in lines)
