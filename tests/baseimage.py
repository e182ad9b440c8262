"""A Debian Python base image made from this machine's own Debian packages, for a Docker engine
that cannot pull one: the test dockerd has no network, and no registry here holds
python:3.X-slim. The image holds Debian's python3 with venv and pip's wheel (what a
`python3 -m venv` needs), dash and coreutils (what a RUN line needs), glibc whole (manylinux
wheels load libpthread and others python itself does not) and every shared library the
rest loads; the files are the packages' own, as `dpkg -L` lists them.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from pathlib import Path

PACKAGES = ("libc6", "libgcc-s1", "zlib1g", "dash", "coreutils", "python3.11-minimal",
            "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11-venv",
            "python3-pip-whl", "python3-setuptools-whl", "media-types")
LINKS = {"usr/bin/sh": "dash", "usr/bin/python3": "python3.11"}
# Merged /usr (Debian 12): /bin, /lib, /lib64 and /sbin are links into /usr, here as there.
MERGED = ("bin", "lib", "lib64", "sbin")
_NEEDED = re.compile(r"=> (/\S+)|^\s*(/\S+) \(0x")
_ELF = b"\x7fELF"
_SKIP = re.compile(r"/(test|tests|idlelib|tkinter|__pycache__)/|^/usr/share/(doc|man|locale)/")


def missing_packages() -> list[str]:
    """The packages this machine lacks (scripts/deps installs them)."""
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *PACKAGES],
                          capture_output=True, text=True)
    installed = {line.split()[0] for line in done.stdout.splitlines()
                 if line.endswith("install ok installed")}
    return [p for p in PACKAGES if p not in installed]


def _package_files() -> set[Path]:
    listed = subprocess.run(["dpkg", "-L", *PACKAGES], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    return {Path(p) for p in listed
            if p.startswith("/") and not _SKIP.search(p)
            and (Path(p).is_symlink() or Path(p).is_file())}


def _libraries(files: set[Path]) -> set[Path]:
    """Every shared library an ELF file among `files` loads, as the dynamic linker finds it."""
    elves = [f for f in files if f.is_file() and not f.is_symlink()
             and f.open("rb").read(4) == _ELF]
    found: set[Path] = set()
    for i in range(0, len(elves), 200):
        out = subprocess.run(["ldd", *map(str, elves[i:i + 200])], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            match = _NEEDED.search(line)
            if match:
                found.add(Path(match.group(1) or match.group(2)))
    return found


def rootfs() -> bytes:
    """The image's file system as a tar (for `docker import`), deterministic in its order."""
    files = _package_files()
    libs = _libraries(files)
    for lib in list(libs):
        # Keep the name the linker looks for and the file it points to.
        libs.add(lib.resolve())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("tmp", "root", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
        names = {str(p.parent.resolve() / p.name).lstrip("/"): p for p in files | libs}
        links = {d: f"usr/{d}" for d in MERGED if Path("/", d).is_symlink()}
        links.update((n, t) for n, t in LINKS.items() if n not in names)
        for name, path in sorted(names.items()):
            if name in links:
                continue
            tar.add(str(path), arcname=name, recursive=False)
        for name, target in sorted(links.items()):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()
