"""Images read from a local Docker engine (docker SDK), for images built in a pipeline and
never pushed, or pulled with the daemon's own mirrors and login.

The daemon's save stream is read as a stream: every file in it goes to the blob store as it
arrives (hashed on the way), and only manifest.json is kept in memory. Both save formats are
read the same way, through manifest.json: the legacy one (`<id>/layer.tar`, Docker < 25) and
the OCI one (`blobs/sha256/<hex>`, Docker >= 25). Layers from a daemon are uncompressed tars,
so these images go into bundles with uncompressed layers.

The image is saved by the ID its inspect returned, not by name: a tag can move between the two
calls (a concurrent pull on a shared daemon). The save is untrusted all the same: its config
must be that ID (or, with the containerd image store, whose IDs name a manifest or an index,
be reached from the saved blob that ID names), its platform the one asked for, and its
diff_ids those of the saved layers; otherwise the image is refused before anything is written.
"""

from __future__ import annotations

import json
import posixpath
from functools import partial

from bundler import mediatypes, platform, strictjson, text
from bundler.cache import BlobStore
from bundler.digest import CHUNK, DIGEST_RE, HashingWriter, sha256_digest
from bundler.errors import BundlerError, InputError, NetworkError, PlatformError, RegistryError
from bundler.image import Descriptor, Image, Layer, load_document, parse_config
from bundler.platform import Platform
from bundler.reference import Reference
from bundler.sources.registry import MAX_CONFIG
from bundler.sources.resolve import resolve_all
from bundler.stage import stage_layer
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
        failing image is still named in one error (resolve.resolve_all)."""
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
        image_id = found.attrs.get("Id")
        if not isinstance(image_id, str) or not DIGEST_RE.fullmatch(image_id):
            raise RegistryError(f"{name}: the daemon's image ID {text.shown(image_id)} is "
                                "not a sha256 digest")
        inspected = Platform(found.attrs.get("Os", ""), found.attrs.get("Architecture", ""),
                             found.attrs.get("Variant") or None)
        if not platform.matches(self._want, inspected):
            raise PlatformError(f"{name}: the daemon's image is {inspected}, not {self._want}")
        config, layer_files = self._save(client, name, image_id)
        have, diff_ids = parse_config(config, len(layer_files), f"{name}: config")
        if not platform.matches(self._want, have):
            raise PlatformError(f"{name}: the config the daemon saved for image {image_id} is "
                                f"{have}, not {self._want}")
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

    def _save(self, client, name: str, image_id: str) -> tuple[bytes, list[str]]:
        """Save image `image_id`; (its config bytes, its layers' digests as saved)."""
        files, links, manifest = self._read_save(client, name, image_id)
        saved = set(files.values())

        def digest_of(path: str) -> str:
            path = links.get(path, path)
            if path not in files:
                raise RegistryError(f"{name}: the daemon's save stream lacks {path}")
            return files[path]

        bound: list[tuple[bytes, list[str]]] = []
        configs = []
        for entry in _entries(manifest, name):
            digest = digest_of(entry["Config"])
            configs.append(digest)
            if digest == image_id or _reaches(self._store, saved, image_id, digest, name):
                config = _small(self._store, digest, MAX_CONFIG, f"{name}: config {digest}")
                bound.append((config, [digest_of(p) for p in entry["Layers"]]))
        if not bound:
            raise RegistryError(f"{name}: the daemon saved config {', '.join(configs)}, not "
                                f"image {image_id} it inspected")
        # The containerd image store saves one entry per platform it holds of an index.
        return next((b for b in bound if self._serves(b[0], name)), bound[0])

    def _serves(self, config: bytes, name: str) -> bool:
        doc = load_document(config, f"{name}: config", strictjson.CONFIG)
        try:
            return isinstance(doc, dict) and platform.matches(self._want, platform.read(doc))
        except platform.PlatformFieldError:
            return False  # parse_config says what is wrong with it

    def _read_save(self, client, name: str, image_id: str
                   ) -> tuple[dict[str, str], dict[str, str], bytes]:
        """Store every file of the save stream of `image_id`: (path in the save tar -> digest
        of its bytes, symlink -> the path it names, manifest.json's bytes)."""
        stream = _ChunkReader(client.api.get_image(image_id, chunk_size=CHUNK))
        files: dict[str, str] = {}
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
        return files, links, manifest

    def _store_file(self, tar: TarStream) -> str:
        with self._store.writer() as pending:
            hashed = HashingWriter(pending)
            while chunk := tar.read_data(CHUNK):
                hashed.write(chunk)
            digest = hashed.digest
            # Always the bytes just hashed: an entry already there is the cache's word only.
            pending.commit(self._store.path(digest))
        return digest

    def _layer(self, name: str, i: int, digest: str, diff_id: str) -> Layer:
        what = f"{name}: layer {i}"
        if digest != diff_id:
            # A daemon with the containerd image store saves the registry's compressed blob:
            # store its uncompressed tar (checked against the diff_id) beside it.
            saved = Layer(Descriptor(mediatypes.OCI_LAYER_GZIP, digest, self._store.size(digest)),
                          diff_id, partial(self._store.open, digest))
            if not self._store.verified(diff_id):
                stage_layer(saved, self._store, True, what)
        size = self._store.size(diff_id)
        return Layer(Descriptor(mediatypes.DOCKER_LAYER, diff_id, size), diff_id,
                     partial(self._store.open, diff_id))


def _entries(manifest: bytes, name: str) -> list[dict]:
    """The entries of a save's manifest.json, each with a Config path and a list of Layers."""
    try:
        entries = strictjson.loads(manifest, strictjson.DOCKER_MANIFEST)
    except strictjson.StrictJSONError as e:
        raise RegistryError(f"{name}: the daemon's manifest.json is bad JSON ({e})") from None
    if not isinstance(entries, list) or not entries or not all(
            isinstance(e, dict) and isinstance(e.get("Config"), str)
            and isinstance(e.get("Layers"), list) for e in entries):
        raise RegistryError(f"{name}: the daemon's save stream has no usable manifest.json")
    return entries


def _reaches(store: BlobStore, saved: set[str], image_id: str, config: str, name: str) -> bool:
    """Whether `image_id` names a saved manifest whose config is `config`, or a saved index
    listing such a manifest (the containerd image store's IDs are those of manifests or
    indexes)."""
    doc = _saved_document(store, saved, image_id, name)
    listed = doc.get("manifests") if isinstance(doc, dict) else None
    return _config_digest(doc) == config or isinstance(listed, list) and any(
        isinstance(m, dict) and _config_digest(
            _saved_document(store, saved, m.get("digest"), name)) == config for m in listed)


def _saved_document(store: BlobStore, saved: set[str], digest: object, name: str) -> object:
    if digest not in saved:
        return None
    return load_document(_small(store, digest, MAX_CONFIG, f"{name}: {digest}"),
                         f"{name}: {digest}")


def _config_digest(doc: object) -> object:
    config = doc.get("config") if isinstance(doc, dict) else None
    return config.get("digest") if isinstance(config, dict) else None


def _small(store: BlobStore, digest: str, limit: int, what: str) -> bytes:
    """A saved document of at most `limit` bytes, read back from the store."""
    if store.size(digest) > limit:
        raise RegistryError(f"{what}: {store.size(digest)} bytes, more than {limit}")
    data = store.read_small(digest, limit)
    if data is None:
        raise RegistryError(f"{what}: vanished from the store, or changed there")
    return data


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
        unreachable = (f"cannot reach the Docker daemon ({_explain(e)}); is DOCKER_HOST right "
                       "and the daemon running?")
        return NetworkError(unreachable, unreachable)
    raise e


def _explain(e: Exception) -> str:
    text = getattr(e, "explanation", None) or str(e)
    return str(text).splitlines()[0] if text else type(e).__name__

