"""Images read from a local Docker engine (docker SDK), for images built in a pipeline and
never pushed, or pulled with the daemon's own mirrors and login.

The daemon's save stream is read as a stream: every file in it goes to the blob store as it
arrives (hashed on the way), and only manifest.json is kept in memory. Both save formats are
read the same way, through manifest.json: the legacy one (`<id>/layer.tar`, Docker < 25) and
the OCI one (`blobs/sha256/<hex>`, Docker >= 25). Layers from a daemon are uncompressed tars,
so these images go into bundles with uncompressed layers.
"""

from __future__ import annotations

import json
import posixpath
from functools import partial

from bundler import layer as layers
from bundler import mediatypes, platform
from bundler.cache import BlobStore
from bundler.digest import CHUNK, HashingWriter, sha256_digest
from bundler.errors import BundlerError, InputError, NetworkError, PlatformError, RegistryError
from bundler.fetch import resolve_all
from bundler.image import Descriptor, Image, Layer, parse_config
from bundler.platform import Platform
from bundler.reference import Reference
from bundler.tarstream import REGULAR, TarError, TarStream

PULL_POLICIES = ("missing", "always", "never")
# manifest.json of a save lists every image; far below this in any real save.
_MAX_SAVE_MANIFEST = 4 << 20
# Legacy per-layer metadata we do not need (the config carries what matters).
_SKIPPED = ("VERSION", "json", "repositories", "oci-layout", "index.json")


class DockerSource:
    """Images from the daemon docker.from_env() finds (DOCKER_HOST, DOCKER_TLS_VERIFY, ...)."""

    def __init__(self, want: Platform, pull: str, store: BlobStore, client=None):
        if pull not in PULL_POLICIES:
            raise InputError(f"--pull {pull!r}: want one of {', '.join(PULL_POLICIES)}")
        self._want = want
        self._pull = pull
        self._store = store
        self._client = client

    def images(self, refs: list[Reference]) -> list[Image]:
        """[image(ref) for ref in refs], one at a time: the daemon pulls in parallel by itself
        and a save streams every layer, so threads would only compete for the disk. Every
        failing image is still named in one error (fetch.resolve_all)."""
        return resolve_all(self.image, refs, 1)

    def image(self, ref: Reference) -> Image:
        name = ref.image_name
        try:
            return self._image(ref, name)
        except BundlerError:
            raise
        except Exception as e:  # noqa: BLE001 - the SDK's and requests' errors, translated
            raise _translate(e, name) from None

    def _image(self, ref: Reference, name: str) -> Image:
        client = self._docker()
        found = self._local(client, name)
        if self._pull == "always" or (found is None and self._pull == "missing"):
            found = self._pull_image(client, ref, name)
        if found is None:
            raise RegistryError(f"{name}: not in the Docker daemon (--pull never)")
        have = Platform(found.attrs.get("Os", ""), found.attrs.get("Architecture", ""),
                        found.attrs.get("Variant") or None)
        if not platform.matches(self._want, have):
            raise PlatformError(f"{name}: the daemon's image is {have}, not {self._want}")
        config, layer_files = self._save(client, name)
        _, diff_ids = parse_config(config, len(layer_files), f"{name}: config")
        image_layers = tuple(self._layer(name, i, digest, diff_id)
                             for i, (digest, diff_id) in enumerate(zip(layer_files, diff_ids,
                                                                       strict=True)))
        manifest = _manifest(config, image_layers)
        return Image(ref, have, manifest, mediatypes.DOCKER_MANIFEST, config, image_layers,
                     None, upstream_digest=_repo_digest(found, ref))

    def _docker(self):
        if self._client is None:
            import docker  # imported when used: the registry source never needs it

            self._client = docker.from_env()
        return self._client

    @staticmethod
    def _local(client, name: str):
        import docker

        try:
            return client.images.get(name)
        except docker.errors.ImageNotFound:
            return None

    def _pull_image(self, client, ref: Reference, name: str):
        # The SDK's images.pull() ignores errors reported inside the progress stream; read
        # the stream ourselves so a failed pull says why.
        for event in client.api.pull(ref.name, tag=ref.digest or ref.tag,
                                     platform=str(self._want), stream=True, decode=True):
            if "error" in event:
                message = str(event["error"]).splitlines()[0]
                raise RegistryError(f"{name}: the Docker daemon could not pull it ({message})")
        return client.images.get(name)

    def _save(self, client, name: str) -> tuple[bytes, list[str]]:
        """Store every file of the save stream; (config bytes, layer digests as saved)."""
        stream = _ChunkReader(client.api.get_image(name, chunk_size=CHUNK))
        files: dict[str, str] = {}  # path in the save tar -> digest of its bytes
        links: dict[str, str] = {}
        manifest = b""
        try:
            tar = TarStream(stream)
            for member in tar:
                base = posixpath.basename(member.name)
                if member.kind == "symlink":
                    links[member.name] = posixpath.normpath(
                        posixpath.join(posixpath.dirname(member.name), member.linkname))
                elif member.kind == REGULAR and member.name == "manifest.json":
                    if member.size > _MAX_SAVE_MANIFEST:
                        raise RegistryError(f"{name}: the daemon's manifest.json is too large")
                    manifest = b"".join(iter(tar.read_data, b""))
                elif member.kind == REGULAR and base not in _SKIPPED:
                    files[member.name] = self._store_file(tar)
        except TarError as e:
            raise RegistryError(f"{name}: unreadable save stream from the daemon ({e})") from None
        try:
            entry = json.loads(manifest)[0]
            config_path, layer_paths = entry["Config"], entry["Layers"]
        except (ValueError, LookupError, TypeError):
            raise RegistryError(f"{name}: the daemon's save stream has no usable manifest.json"
                                ) from None

        def digest_of(path: str) -> str:
            path = links.get(path, path)
            if path not in files:
                raise RegistryError(f"{name}: the daemon's save stream lacks {path}")
            return files[path]

        config = self._store.read_small(digest_of(config_path))
        if config is None:
            raise RegistryError(f"{name}: config {config_path} vanished from the store")
        return config, [digest_of(p) for p in layer_paths]

    def _store_file(self, tar: TarStream) -> str:
        with self._store.writer() as pending:
            hashed = HashingWriter(pending)
            while chunk := tar.read_data(CHUNK):
                hashed.write(chunk)
            digest = hashed.digest
            if self._store.has(digest):
                return digest  # the pending copy is dropped
            pending.commit(self._store.path(digest))
        return digest

    def _layer(self, name: str, i: int, digest: str, diff_id: str) -> Layer:
        what = f"{name}: layer {i}"
        if digest != diff_id:
            # A daemon with the containerd image store saves the registry's compressed blob:
            # store its uncompressed tar (checked against the diff_id) beside it.
            saved = Layer(Descriptor(mediatypes.OCI_LAYER_GZIP, digest, self._store.size(digest)),
                          diff_id, partial(self._store.open, digest))
            if not self._store.has(diff_id):
                layers.stage(saved, self._store, True, what)
        size = self._store.size(diff_id)
        return Layer(Descriptor(mediatypes.DOCKER_LAYER, diff_id, size), diff_id,
                     partial(self._store.open, diff_id))


def _manifest(config: bytes, image_layers: tuple[Layer, ...]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": mediatypes.DOCKER_MANIFEST,
        "config": {"mediaType": mediatypes.DOCKER_CONFIG, "digest": sha256_digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": layer.descriptor.media_type, "digest": layer.descriptor.digest,
                    "size": layer.descriptor.size} for layer in image_layers],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _repo_digest(found, ref: Reference) -> str | None:
    """The digest the daemon pulled this image by (RepoDigests), for this repository."""
    short = ref.name.removeprefix("docker.io/").removeprefix("library/")
    for entry in found.attrs.get("RepoDigests") or []:
        repo, _, digest = entry.partition("@")
        if repo in (ref.name, short, ref.name.removeprefix("docker.io/")):
            return digest
    return None


class _ChunkReader:
    """The SDK's generator of byte chunks as a file-like stream."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        while self._pos == len(self._buf):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._buf, self._pos = chunk, 0
        end = len(self._buf) if n is None or n < 0 else min(len(self._buf), self._pos + n)
        data = self._buf[self._pos : end]
        self._pos = end
        return data


def _translate(e: Exception, name: str) -> BundlerError:
    import docker
    import requests

    if isinstance(e, docker.errors.ImageNotFound | docker.errors.NotFound):
        return RegistryError(f"{name}: not found by the Docker daemon ({_explain(e)})")
    if isinstance(e, docker.errors.APIError):
        return RegistryError(f"{name}: Docker daemon error ({_explain(e)})")
    if isinstance(e, docker.errors.DockerException | requests.exceptions.RequestException):
        return NetworkError(f"cannot reach the Docker daemon ({_explain(e)}); is DOCKER_HOST "
                            "right and the daemon running?")
    raise e


def _explain(e: Exception) -> str:
    text = getattr(e, "explanation", None) or str(e)
    return str(text).splitlines()[0] if text else type(e).__name__

