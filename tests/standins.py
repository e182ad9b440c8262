"""Stand-ins for the three Multus images, made of real binaries from this machine.

Shaped like the real ones (a shared base layer, Go binaries, multi-arch lists with an arm64
entry, a small busybox), about 110 MB uncompressed, under the names and tags of images.txt,
so the default image list builds against a local registry given as a docker.io mirror.
Used by scripts/demo and scripts/bench. The binaries come from Debian packages the scripts
install (containerd, docker-registry) and from the base system.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from tests import imagegen as gen
from tests.registryseed import push_index

IMAGES = {
    "rancher/hardened-multus-cni": "v4.3.0-build20260722",
    "rancher/hardened-cni-plugins": "v1.9.1-build20260717",
    "rancher/mirrored-library-busybox": "1.36.1",
}


def _files(pairs: list[tuple[str, str]]) -> list[tuple]:
    entries, dirs = [], set()
    for src, dest in pairs:
        parent = os.path.dirname(dest)
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = os.path.dirname(parent)
        entries.append(("file", dest, Path(src).read_bytes()))
    return [("dir", d) for d in sorted(dirs)] + entries


def _need(path: str) -> str:
    if not os.path.isfile(path):
        raise SystemExit(f"stand-in images need {path}: apt-get install containerd docker-registry")
    return path


def layers() -> dict[str, list[bytes]]:
    """Uncompressed layer tars of each stand-in image."""
    libs = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/lib[cmz]*.so*"))[:12] or sorted(
        glob.glob("/lib/*/libc.so*"))
    base = gen.tar_layer(_files([(p, "lib/" + os.path.basename(p)) for p in libs if
                                 os.path.isfile(p) and not os.path.islink(p)]))
    multus = gen.tar_layer(_files([
        (_need("/usr/bin/containerd"), "usr/src/multus-cni/bin/multus"),
        (_need("/usr/bin/containerd-shim-runc-v2"), "usr/src/multus-cni/bin/multus-daemon"),
        (_need("/usr/bin/containerd-shim"), "usr/src/multus-cni/bin/install_multus"),
    ]))
    plugins = gen.tar_layer(_files([
        (_need("/usr/bin/ctr"), "opt/cni/bin/bridge"),
        (_need("/usr/bin/docker-registry"), "opt/cni/bin/macvlan"),
        (_need("/usr/bin/containerd-shim-runc-v1"), "opt/cni/bin/host-local"),
    ]))
    tools = [p for p in ("/usr/bin/ls", "/usr/bin/cat", "/usr/bin/cp", "/usr/bin/tar",
                         "/usr/bin/grep", "/usr/bin/sed", "/bin/sh", "/usr/bin/find")
             if os.path.isfile(p)]
    busybox = gen.tar_layer(_files([(p, "bin/" + os.path.basename(p)) for p in tools]))
    return {"rancher/hardened-multus-cni": [base, multus],
            "rancher/hardened-cni-plugins": [base, plugins],
            "rancher/mirrored-library-busybox": [busybox]}


def seed(registry_url: str) -> dict[str, gen.TestImage]:
    """Push the stand-ins (amd64 + a small arm64 entry each); reference -> amd64 image."""
    pushed = {}
    for repo, layer_tars in layers().items():
        amd = gen.image(layer_tars)
        arm = gen.image([gen.tar_layer(gen.random_files(len(repo), 1, 1000))], arch="arm64",
                        variant="v8")
        body, media = gen.index([arm, amd], oci=False)
        push_index(registry_url, repo, IMAGES[repo], [arm, amd], body, media)
        pushed[f"docker.io/{repo}:{IMAGES[repo]}"] = amd
    return pushed
