"""Images pulled from registries (mirrors first, as K3s does), no daemon involved."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

from bundler import localfile, mediatypes, platform
from bundler.atomic import remove_stale, temp_name
from bundler.cache import BlobStore
from bundler.config import RegistriesConfig
from bundler.digest import VerifyingReader
from bundler.errors import BundlerError, PlatformError, RegistryError, joined_cause
from bundler.image import Descriptor, Image, Layer, load_document, parse_config, parse_manifest
from bundler.platform import Platform
from bundler.reference import Reference
from bundler.registry import retry
from bundler.registry.client import Client, media_type_of
from bundler.registry.endpoint import DEFAULT_JOBS, DEFAULT_TIMEOUT, Endpoint
from bundler.registry.targets import without_userinfo
from bundler.sources.resolve import resolve_all

# Image configs are small JSON documents; a larger one is refused rather than buffered.
MAX_CONFIG = 8 << 20
# The kept Bearer challenges: a few hundred bytes per endpoint.
MAX_CHALLENGES = 64 << 10
# Any digest: its path in a BlobStore names the directory every entry is in.
_ANY_DIGEST = "sha256:" + "0" * 64


class RegistrySource:
    """Resolves references to images for one platform, trying each endpoint in order."""

    def __init__(
        self,
        registries: RegistriesConfig,
        want: Platform,
        timeout: float = DEFAULT_TIMEOUT,
        store: BlobStore | None = None,
        jobs: int = DEFAULT_JOBS,
        challenges: str | Path | None = None,
    ):
        self._registries = registries
        self._want = want
        self._timeout = timeout
        self._jobs = max(1, jobs)
        # One client per endpoint, shared by every thread: its connections and tokens are
        # reused by all of them.
        self._clients: dict[Endpoint, Client] = {}
        self._clients_lock = threading.Lock()
        # Manifests and configs are kept here by digest; with them cached, a rebuild asks
        # the registry only which digest each tag points at (a HEAD).
        self._store = store
        # A store that held nothing when we started holds none of our manifests: a cold
        # build (an empty cache, --no-cache) GETs each tag at once, instead of a HEAD for a
        # digest it cannot have and then the GET, a round trip more per image.
        self._store_held = store is not None and _holds_anything(store)
        # Where anonymous endpoints' Bearer challenges are kept across runs (the cache):
        # with one known, a rebuild asks for its tokens without a 401 first.
        self._challenges_path = Path(challenges) if challenges else None
        self._challenges = _read_challenges(self._challenges_path)

    def images(self, refs: list[Reference]) -> list[Image]:
        """[image(ref) for ref in refs], resolved `jobs` at a time (over a real network each
        image costs several round trips), in the order of `refs`; every failing
        image is named in one error (resolve.resolve_all)."""
        try:
            return resolve_all(self.image, refs, self._jobs)
        finally:
            self._keep_challenges()

    def image(self, ref: Reference) -> Image:
        """The image `ref` names, for our platform; errors name the reference."""
        failures: list[BundlerError] = []
        for endpoint in self._registries.endpoints(ref.registry):
            try:
                return self._pull(self._client(endpoint), ref)
            except PlatformError:
                raise  # the platform is missing everywhere, not just on this endpoint
            except BundlerError as e:
                failures.append(e)
        if len(failures) == 1:
            raise failures[0]
        error = type(failures[0])(f"{ref}: " + "; ".join(_strip(str(e), ref) for e in failures))
        error.cause = joined_cause(failures)
        raise error

    def _client(self, endpoint: Endpoint) -> Client:
        with self._clients_lock:
            if endpoint not in self._clients:
                # Blob downloads (stage.Fetcher) use as many threads as resolution does.
                self._clients[endpoint] = Client(
                    endpoint, self._timeout, pool=self._jobs,
                    known_challenge=self._challenges.get(without_userinfo(endpoint.url)))
            return self._clients[endpoint]

    def _keep_challenges(self) -> None:
        """Write the endpoints' Bearer challenges for the next run, when they changed. Best
        effort: without the file a run costs one more round trip, nothing else."""
        if self._challenges_path is None:
            return
        with self._clients_lock:
            seen = {without_userinfo(e.url): c.challenge() for e, c in self._clients.items()}
        kept = dict(self._challenges)
        for url, challenge in seen.items():
            if challenge:
                kept[url] = challenge
            else:
                kept.pop(url, None)  # it needs none, or credentials: nothing to keep
        if kept != self._challenges:
            _write_challenges(self._challenges_path, kept)
            self._challenges = kept

    def _pull(self, client: Client, ref: Reference) -> Image:
        what = str(ref)
        body, media_type, digest = self._manifest(client, ref.repository, ref.ref, what,
                                                  confirm=True)
        index_digest = None
        if media_type in mediatypes.INDEXES:
            index_digest = digest
            entry = platform.select(load_document(body, what), self._want, what)
            chosen = Descriptor.from_json(entry, f"{what}: index entry")
            body, media_type, _ = retry.refetch_once(
                lambda: self._manifest(client, ref.repository, chosen.digest, what))
            if len(body) != chosen.size:
                raise RegistryError(
                    f"{what}: manifest {chosen.digest} is {len(body)} bytes, index says "
                    f"{chosen.size}"
                )
        if media_type not in mediatypes.IMAGE_MANIFESTS:
            raise RegistryError(f"{what}: unsupported manifest type {media_type or 'unknown'}")
        config_desc, layer_descs = parse_manifest(body, what)
        config = self._cached(config_desc.digest) or retry.refetch_once(lambda: _read_small(
            client, ref.repository, config_desc, MAX_CONFIG, f"{what}: config {config_desc.digest}"
        ))
        self._keep(config_desc.digest, config)
        have, diff_ids = parse_config(config, len(layer_descs), what)
        if not platform.matches(self._want, have):
            raise PlatformError(f"{what}: image is {have}, not {self._want}")
        layers = tuple(
            Layer(d, diff_id, _opener(client, ref.repository, d, f"{what}: layer {d.digest}"))
            for d, diff_id in zip(layer_descs, diff_ids, strict=True)
        )
        return Image(ref, have, body, media_type, config, layers, index_digest)


    def _manifest(self, client: Client, repository: str, ref: str, what: str,
                  confirm: bool = False) -> tuple[bytes, str, str]:
        """A manifest by tag or digest, from the cache when we have it. With `confirm`, a
        cached by-digest manifest is used only once a HEAD says this repository holds it:
        the cache is keyed by digest alone, and `name@sha256:<another repository's
        manifest>` must fail warm as it fails cold. Manifests named by an
        index we already hold are in its repository by the registry's own rule."""
        digest = ref if ref.startswith("sha256:") else None
        if self._store_held and digest is None:
            digest = client.manifest_digest(repository, ref, what)
        cached = self._cached(digest) if digest else None
        if cached is not None and confirm and ref == digest and not client.has_manifest(
                repository, digest, what):
            cached = None  # the GET says why (MANIFEST_UNKNOWN), exactly as when cold
        if cached is not None:
            return cached, media_type_of(cached), digest
        body, media_type, digest = client.manifest(repository, ref, what)
        self._keep(digest, body)
        return body, media_type, digest

    def _cached(self, digest: str) -> bytes | None:
        return self._store.read_small(digest) if self._store is not None else None

    def _keep(self, digest: str, data: bytes) -> None:
        if self._store is not None and not self._store.has(digest):
            self._store.put(digest, data)


def _opener(client: Client, repository: str, desc: Descriptor, what: str):
    def open_blob() -> VerifyingReader:
        return VerifyingReader(client.blob(repository, desc.digest, what, desc.size),
                               desc.digest, desc.size, what)

    return open_blob


def _read_small(client: Client, repository: str, desc: Descriptor, cap: int, what: str) -> bytes:
    if desc.size > cap:
        raise RegistryError(f"{what}: {desc.size} bytes, more than the {cap} allowed")
    reader = _opener(client, repository, desc, what)()
    try:
        chunks = []
        while chunk := reader.read():
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        reader.close()


def _holds_anything(store: BlobStore) -> bool:
    try:
        with os.scandir(store.path(_ANY_DIGEST).parent) as entries:
            return any(True for _ in entries)
    except OSError:
        return True  # cannot tell: ask, as with a full store


def _read_challenges(path: Path | None) -> dict[str, dict[str, str]]:
    """{endpoint url: {realm, service}} as _write_challenges left it; anything else is no
    hint at all (a damaged or foreign file costs a round trip, never the build)."""
    if path is None:
        return {}
    try:
        doc = json.loads(localfile.read_small(path, MAX_CHALLENGES, "challenge file",
                                              follow_symlinks=False))
    except (BundlerError, OSError, ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {url: {k: v for k, v in c.items() if k in ("realm", "service")}
            for url, c in doc.items()
            if isinstance(url, str) and isinstance(c, dict) and isinstance(c.get("realm"), str)
            and all(isinstance(v, str) for v in c.values())}


def _write_challenges(path: Path, challenges: dict[str, dict[str, str]]) -> None:
    # Nothing else cleans the cache's top directory: a run killed while writing left its
    # temporary here.
    with contextlib.suppress(OSError):
        remove_stale(path.parent)
    temp = temp_name(path)
    try:
        temp.write_text(json.dumps(challenges, indent=1, sort_keys=True) + "\n")
        os.replace(temp, path)
    except BaseException as e:  # a Ctrl-C too: no temporary is left in the cache
        with contextlib.suppress(OSError):
            temp.unlink()
        if not isinstance(e, OSError):
            raise


def _strip(message: str, ref: Reference) -> str:
    prefix = f"{ref}: "
    return message[len(prefix):] if message.startswith(prefix) else message
