"""--source docker bundles the image it inspected, or refuses: a tag moved between the inspect
and the save, or a daemon whose answers disagree, never gives a bundle that misnames an image.

Each test puts a unix-socket HTTP front between bundler and the real dockerd (DOCKER_HOST
points at the front); the front forwards every request and can act on or rewrite an answer.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import socketserver
import tarfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests import imagegen as gen
from tests.cli_helpers import assert_one_line_error, bundler, docker_build, read_manifest
from tests.conftest import BUNDLE
from tests.httpreply import handler, reply

AMD = "docker.io/library/busybox:1.36.1"  # pulled for linux/amd64 by the fixture below
ARM = "docker.io/local/arm64:v1"  # an arm64 image, tagged only under this name
NEVER_PULL = ("--pull", "never")  # the daemon's own images, as the front shows them
HOP = {"connection", "transfer-encoding", "keep-alive", "content-length"}

# (method, path without the API version prefix, status, headers, body) -> the answer to give
Rewrite = Callable[[str, str, int, dict, bytes], tuple[int, dict, bytes]]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=300)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class DaemonFront:
    """A Docker API front on a unix socket; `rewrite` sees every answer before the client."""

    def __init__(self, upstream: Path, socket_path: Path, rewrite: Rewrite,
                 paths: dict[str, str]):
        self.seen: list[tuple[str, str]] = []
        self._upstream = str(upstream)
        self._rewrite = rewrite
        self._paths = paths  # text in a request's path -> what the daemon is asked instead
        self._server = _Server(str(socket_path), handler(self.forward))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.host = f"unix://{socket_path}"

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        conn = _UnixConnection(self._upstream)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP}
            asked = h.path
            for old, new in self._paths.items():
                asked = asked.replace(old, new)
            conn.request(h.command, asked, body=body, headers=headers)
            r = conn.getresponse()
            status, out, data = r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()
        path = re.sub(r"^/v[0-9.]+", "", h.path)
        self.seen.append((h.command, path))
        status, out, data = self._rewrite(h.command, path, status, out, data)
        reply(h, status, data, {k: v for k, v in out.items() if k.lower() not in HOP})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _inspect_path(name: str) -> str:
    return f"/images/{name}/json"


class Save:
    """A daemon's save tar (one image), taken apart to be changed and put back together."""

    def __init__(self, data: bytes):
        src = tarfile.open(fileobj=io.BytesIO(data))
        self.files = {m.name: (m, src.extractfile(m).read() if m.isfile() else None)
                      for m in src.getmembers()}
        self.manifest = json.loads(self.files["manifest.json"][1])
        self.config_path = self.manifest[0]["Config"]

    @property
    def config(self) -> bytes:
        return self.files[self.config_path][1]

    def replace_config(self, body: bytes) -> str:
        """Put `body` in as the config, under the name its digest gives; its digest."""
        digest = gen.digest(body)
        member = self.files.pop(self.config_path)[0]
        oci = "/" in self.config_path  # blobs/sha256/HEX, else HEX.json
        self.config_path = f"blobs/sha256/{digest[7:]}" if oci else f"{digest[7:]}.json"
        self.manifest[0]["Config"] = self.config_path
        self.add(self.config_path, body, member)
        return digest

    def add(self, name: str, content: bytes, like: tarfile.TarInfo | None = None) -> str:
        member = like or tarfile.TarInfo()
        member.name, member.size = name, len(content)
        self.files[name] = (member, content)
        return gen.digest(content)

    def tar(self, manifest: bytes | None = None) -> bytes:
        """The save as a tar, with `manifest` as manifest.json's bytes if given."""
        self.add("manifest.json", manifest or json.dumps(self.manifest).encode(),
                 self.files["manifest.json"][0])
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for member, content in self.files.values():
                tar.addfile(member, None if content is None else io.BytesIO(content))
        return out.getvalue()


def _rewrite_save(data: bytes, change: Callable[[dict], None]) -> tuple[bytes, str]:
    """The save tar with its config changed by `change`; (the new tar, the new config's
    digest)."""
    save = Save(data)
    config = json.loads(save.config)
    change(config)
    digest = save.replace_config(json.dumps(config, separators=(",", ":")).encode())
    return save.tar(), digest


@pytest.fixture(scope="module")
def client(dockerd):
    import docker

    client = docker.DockerClient(base_url=dockerd.host)
    client.images.pull("docker.io/library/busybox", tag="1.36.1", platform="linux/amd64")
    client.images.pull("docker.io/rancher/wrongarch", tag="v1", platform="linux/arm64")
    arm = client.images.get("docker.io/rancher/wrongarch:v1")
    assert arm.attrs["Architecture"] == "arm64"
    arm.tag(*ARM.rsplit(":", 1))
    # Only ARM names it now: the other test modules' view of the daemon is unchanged.
    client.images.remove("docker.io/rancher/wrongarch:v1")
    return client


@pytest.fixture
def front(dockerd, tmp_path_factory):
    fronts = []

    def start(rewrite: Rewrite, paths: dict[str, str] | None = None) -> DaemonFront:
        # A short path: a socket path must fit in sun_path (108 bytes).
        where = Path(tmp_path_factory.mktemp("front")) / "d.sock"
        fronts.append(DaemonFront(dockerd.socket, where, rewrite, paths or {}))
        return fronts[-1]

    yield start
    for f in fronts:
        f.stop()


def _entry(tmp: Path) -> dict:
    (entry,) = read_manifest(tmp / "dist")["images"]
    return entry


def test_a_tag_moved_between_inspect_and_save_bundles_the_inspected_image(
        client, front, tmp_path):
    # A concurrent pull on a shared daemon, made deterministic: the tag moves to an arm64
    # image right after the daemon answered the inspect, before the client asks for the save.
    moving = "docker.io/local/moving:v1"
    amd = client.images.get(AMD)
    amd.tag(*moving.rsplit(":", 1))
    moved = []

    def retag_after_inspect(method, path, status, headers, body):
        if path == _inspect_path(moving) and not moved:
            client.images.get(ARM).tag(*moving.rsplit(":", 1), force=True)
            moved.append(path)
        return status, headers, body

    host = front(retag_after_inspect).host
    try:
        run = docker_build(host, tmp_path, [moving], *NEVER_PULL)
    finally:
        client.images.remove(moving, force=True)
    assert moved
    # Refusing in one line would be safe too, but a busy shared daemon would then fail
    # builds for no fault of the image: the save is asked for by the inspected ID.
    assert run.code == 0, run.stderr
    entry = _entry(tmp_path)
    assert entry["configDigest"] == amd.id
    assert entry["platform"] == "linux/amd64"
    assert [x["diffID"] for x in entry["layers"]] == amd.attrs["RootFS"]["Layers"]
    assert bundler("verify", str(tmp_path / "dist" / BUNDLE)).code == 0


def test_an_inspect_that_misstates_the_platform_is_refused(client, front, tmp_path):
    # The daemon's bytes are genuine (an arm64 image); only its inspect answer says amd64.
    def say_amd64(method, path, status, headers, body):
        if path == _inspect_path(ARM):
            doc = json.loads(body)
            doc["Architecture"], doc["Variant"] = "amd64", ""
            body = json.dumps(doc).encode()
        return status, headers, body

    run = docker_build(front(say_amd64).host, tmp_path, [ARM], *NEVER_PULL)
    assert_one_line_error(run, ARM, "linux/arm64", "linux/amd64")
    assert run.code == 1 and not (tmp_path / "dist").exists()


def _save_path(method: str, path: str) -> bool:
    return method == "GET" and path.startswith("/images/") and path.endswith("/get")


def test_a_saved_config_that_is_not_the_inspected_image_is_refused(client, front, tmp_path):
    amd = client.images.get(AMD)
    replaced = []

    def other_config(method, path, status, headers, body):
        if _save_path(method, path):
            body, digest = _rewrite_save(body, lambda c: c.update(architecture="arm64"))
            replaced.append(digest)
        return status, headers, body

    run = docker_build(front(other_config).host, tmp_path, [AMD], *NEVER_PULL)
    assert replaced
    assert_one_line_error(run, AMD, amd.id, replaced[0])
    assert run.code == 1 and not (tmp_path / "dist").exists()


def _lying_front(client, front, edit: Callable[[Save], str]) -> tuple[str, str]:
    """A front whose save of AMD is edited by `edit` and whose inspect of AMD gives the ID
    `edit` returns (the same each time: edits are deterministic); (its host, that ID)."""
    genuine_id = client.images.get(AMD).id
    claimed = edit(Save(b"".join(client.api.get_image(genuine_id))))

    def lie(method, path, status, headers, body):
        if path == _inspect_path(AMD):
            doc = json.loads(body)
            doc["Id"] = claimed
            body = json.dumps(doc).encode()
        elif _save_path(method, path):
            save = Save(body)
            assert edit(save) == claimed
            body = save.tar()
        return status, headers, body

    # A save asked for by the claimed ID is the genuine image's save.
    return front(lie, {claimed[7:]: genuine_id[7:]}).host, claimed


def _config_change(change: Callable[[dict], None]) -> Callable[[Save], str]:
    def edit(save: Save) -> str:
        config = json.loads(save.config)
        change(config)
        return save.replace_config(json.dumps(config, separators=(",", ":")).encode())
    return edit


def test_a_daemon_consistent_in_its_lie_is_refused_on_the_saved_config(client, front, tmp_path):
    # Inspect and save agree on the ID, but the config saved under it is arm64 while the
    # inspect says amd64: the platform checked is the one the saved config states.
    host, _ = _lying_front(client, front, _config_change(lambda c: c.update(architecture="arm64")))
    run = docker_build(host, tmp_path, [AMD], *NEVER_PULL)
    assert_one_line_error(run, AMD, "linux/arm64", "linux/amd64")
    assert run.code == 1 and not (tmp_path / "dist").exists()


def test_an_oversized_saved_config_is_refused_before_it_is_read(client, front, tmp_path):
    def pad(save: Save) -> str:
        return save.replace_config(save.config + b" " * (8 << 20))

    host, claimed = _lying_front(client, front, pad)
    run = docker_build(host, tmp_path, [AMD], *NEVER_PULL)
    assert_one_line_error(run, AMD, claimed, "more than 8388608")
    assert run.code == 1 and not (tmp_path / "dist").exists()


def test_a_saved_layer_that_is_not_its_diff_id_is_refused(client, front, tmp_path):
    def other_layer(method, path, status, headers, body):
        if _save_path(method, path):
            save = Save(body)
            layer = save.manifest[0]["Layers"][0]
            save.add(layer, save.files[layer][1][:-1024] + b"x" * 1024, save.files[layer][0])
            body = save.tar()
        return status, headers, body

    run = docker_build(front(other_layer).host, tmp_path, [AMD], *NEVER_PULL)
    assert_one_line_error(run, AMD, "layer 0", "diff_id mismatch")
    assert run.code == 1 and not (tmp_path / "dist").exists()


def test_a_save_manifest_that_go_reads_otherwise_is_refused(client, front, tmp_path):
    # Two spellings of Config: Python's json keeps the last, Go's the one its field matches.
    def twice(method, path, status, headers, body):
        if _save_path(method, path):
            save = Save(body)
            entry = json.dumps(save.manifest[0])[:-1] + ', "config": "elsewhere.json"}'
            body = save.tar(f"[{entry}]".encode())
        return status, headers, body

    run = docker_build(front(twice).host, tmp_path, [AMD], *NEVER_PULL)
    assert_one_line_error(run, AMD, "manifest.json")
    assert run.code == 1 and not (tmp_path / "dist").exists()


def _manifest_doc(save: Save) -> dict:
    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
               "digest": gen.digest(save.files[path][1]), "size": len(save.files[path][1])}
              for path in save.manifest[0]["Layers"]]
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": gen.digest(save.config), "size": len(save.config)},
            "layers": layers}


def _containerd_store_ids() -> dict[str, Callable[[Save], str]]:
    """Saves shaped as the containerd image store's: the ID names a manifest or an index."""
    def manifest(save: Save) -> str:
        body = json.dumps(_manifest_doc(save)).encode()
        return save.add(f"blobs/sha256/{gen.digest(body)[7:]}", body)

    def index(save: Save) -> str:
        listed = manifest(save)
        body = json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": listed,
             "size": save.files[f"blobs/sha256/{listed[7:]}"][0].size}]}).encode()
        return save.add(f"blobs/sha256/{gen.digest(body)[7:]}", body)

    return {"manifest": manifest, "index": index}


@pytest.mark.parametrize("shape", ["manifest", "index"])
def test_an_id_naming_a_saved_manifest_or_index_of_the_config_is_accepted(
        client, front, tmp_path, shape):
    host, claimed = _lying_front(client, front, _containerd_store_ids()[shape])
    run = docker_build(host, tmp_path, [AMD], *NEVER_PULL)
    assert run.code == 0, run.stderr
    amd = client.images.get(AMD)
    entry = _entry(tmp_path)
    assert entry["configDigest"] == amd.id and claimed != amd.id
    assert [x["diffID"] for x in entry["layers"]] == amd.attrs["RootFS"]["Layers"]


def test_an_id_naming_a_saved_manifest_of_another_config_is_refused(client, front, tmp_path):
    def other(save: Save) -> str:
        doc = _manifest_doc(save)
        doc["config"]["digest"] = gen.digest(b"another config")
        body = json.dumps(doc).encode()
        return save.add(f"blobs/sha256/{gen.digest(body)[7:]}", body)

    host, claimed = _lying_front(client, front, other)
    run = docker_build(host, tmp_path, [AMD], *NEVER_PULL)
    assert_one_line_error(run, AMD, claimed, client.images.get(AMD).id)
    assert run.code == 1 and not (tmp_path / "dist").exists()
