"""The real servers the tests (and scripts/demo) run on loopback: registry and containerd.

See shared/real-parts.md. Each is started from its Debian package's binary, logs to a file in
its own directory, and is stopped by the process id we started.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import requests
import zstandard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start; log:\n{log.read_text(errors='replace')[-2000:]}")


class Server:
    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "server.log"

    def _spawn(self, argv: list[str]) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Registry(Server):
    """CNCF distribution (`docker-registry`) on a free loopback port, plain HTTP by default."""

    def __init__(self, directory: Path, extra_config: str = "", data: Path | None = None,
                 tls: tuple[Path, Path] | None = None):
        super().__init__(directory)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        tls_config = f", tls: {{certificate: {tls[0]}, key: {tls[1]}}}" if tls else ""
        (self.dir / "config.yml").write_text(
            "version: 0.1\n"
            f"storage: {{filesystem: {{rootdirectory: {data or self.dir / 'data'}}},"
            " delete: {enabled: true}}\n"
            f"http: {{addr: {self.host}{tls_config}}}\n"
            "log: {level: warn}\n" + extra_config
        )

    def start(self, verify: str | bool = True) -> Registry:
        self._spawn(["docker-registry", "serve", str(self.dir / "config.yml")])
        _wait(lambda: requests.get(f"{self.url}/v2/", timeout=2, verify=verify).status_code
              in (200, 401), "docker-registry", self.log)
        return self


class Containerd(Server):
    """containerd with its own root, state and socket; ctr talks to it over that socket."""

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.socket = self.dir / "containerd.sock"
        (self.dir / "config.toml").write_text(
            "version = 2\n"
            f'root = "{self.dir}/root"\n'
            f'state = "{self.dir}/state"\n'
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
            "[plugins]\n"
            '  [plugins."io.containerd.grpc.v1.cri"]\n'
            "    disable_apparmor = true\n"
        )

    def start(self) -> Containerd:
        self._spawn(["containerd", "--config", str(self.dir / "config.toml")])
        _wait(lambda: self.ctr("version").returncode == 0, "containerd", self.log)
        return self

    def ctr(self, *args: str, namespace: str = "k8s.io", check: bool = False,
            stdin=None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ctr", "-a", str(self.socket), "-n", namespace, *args],
            capture_output=True, text=True, check=check, stdin=stdin, timeout=300,
        )

    def import_bundle(
        self, bundle: Path, all_platforms: bool = True
    ) -> subprocess.CompletedProcess:
        """Import a .tar.zst the way K3s does: all platforms, namespace k8s.io, unpacked."""
        tar = bundle.with_name(bundle.name + ".import.tar")
        with open(bundle, "rb") as src, open(tar, "wb") as dst:
            zstandard.ZstdDecompressor().copy_stream(src, dst)
        try:
            args = ["images", "import", "--snapshotter", "native"]
            args += ["--all-platforms"] if all_platforms else ["--platform", "linux/amd64"]
            return self.ctr(*args, str(tar))
        finally:
            tar.unlink()

    def images(self) -> dict[str, dict]:
        """name -> {digest, type, platforms} of the images in k8s.io."""
        out = self.ctr("images", "ls", check=True).stdout.splitlines()
        images = {}
        for line in out[1:]:
            cols = line.split()
            if len(cols) >= 6:
                images[cols[0]] = {"type": cols[1], "digest": cols[2], "platforms": cols[5]}
        return images

    def clear(self) -> None:
        names = list(self.images())
        if names:
            self.ctr("images", "rm", "--sync", *names, check=True)

    def content_labels(self) -> str:
        return self.ctr("content", "ls").stdout


def write_registries_yaml(path: Path, mirrors: dict[str, list[str]], configs: dict | None = None,
                          ) -> Path:
    """A K3s registries.yaml (JSON is YAML) sending each registry to the given endpoints."""
    doc = {"mirrors": {name: {"endpoint": urls} for name, urls in mirrors.items()}}
    if configs:
        doc["configs"] = configs
    path.write_text(json.dumps(doc, indent=2))
    return path


def login(host: str, user: str, password: str, ca: Path | None = None) -> dict:
    """registries.yaml's `configs` for `host`: a login, and the CA file that verifies it."""
    config: dict = {"auth": {"username": user, "password": password}}
    if ca:
        config["tls"] = {"ca_file": str(ca)}
    return {host: config}


def ensure_binaries(*names: str) -> list[str]:
    """The names among `names` not on PATH."""
    return [n for n in names if not any(
        os.access(os.path.join(d, n), os.X_OK) for d in os.environ.get("PATH", "").split(":"))]


class Dockerd(Server):
    """dockerd with vfs storage and no networking of its own (no iptables, no bridge), pulling
    docker.io images through the test registry as its mirror."""

    def __init__(self, directory: Path, mirror: str | None = None):
        super().__init__(directory)
        self.socket = self.dir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.mirror = mirror

    def start(self) -> Dockerd:
        argv = ["dockerd", "--data-root", str(self.dir / "root"), "--exec-root",
                str(self.dir / "exec"), "-H", self.host, "--pidfile", str(self.dir / "pid"),
                "--iptables=false", "--ip6tables=false", "--bridge=none",
                "--storage-driver=vfs"]
        if self.mirror:
            host = self.mirror.split("://", 1)[1]
            argv += ["--registry-mirror", self.mirror, "--insecure-registry", host]
        self._spawn(argv)
        import docker

        _wait(lambda: docker.DockerClient(base_url=self.host).ping(), "dockerd", self.log, 60)
        return self
