"""`bundler build`: images.txt -> a source -> the stage -> the bundle sink.

The image list is read and every option checked first; then every architecture's images are
resolved through the source (sources.from_options: a registry or a Docker daemon), then each
architecture's layers are pulled and checked by a Stage (stage.py) and written by a
BundleSink (sinks/bundle.py: the .tar.zst, its image list, checksum manifest and sha256sum
file) under temporary names, and all of them are renamed together at the end: when build()
raises, no file exists under a final name that was not there before, no temporary is left
behind, and an output directory the build created is removed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

from bundler import cache, imagelist, mutate, platform, sources
from bundler.atomic import AtomicOutputs
from bundler.bundleformat import compress
from bundler.cache import BlobStore, FrameCache
from bundler.errors import BundlerError, EnvironmentFailure, InputError
from bundler.image import Image
from bundler.progress import Progress
from bundler.reference import Reference
from bundler.registry.endpoint import DEFAULT_JOBS, DEFAULT_TIMEOUT
from bundler.sinks.bundle import BundleSink, Extras
from bundler.sources import SOURCES
from bundler.stage import Stage

__all__ = ["DEFAULT_NAME", "SOURCES", "ArchitecturesFailed", "BuildOptions", "architectures",
           "build"]

DEFAULT_NAME = "k3s-airgap-images-multus"
# In the cache directory: where anonymous registries said their tokens come from, so that a
# rebuild asks for its tokens without a 401 first (sources/registry.py).
CHALLENGES = "challenges.json"


@dataclass(frozen=True)
class BuildOptions:
    """What `bundler build` was asked; defaults are the CLI's."""

    images: str = "images.txt"
    output_dir: str = "dist"
    name: str = DEFAULT_NAME
    arch: str = "amd64"
    layers: str | None = None  # None: preserve for registries; daemons give uncompressed
    source: str = "registry"
    pull: str = "missing"  # with source "docker": missing, always, never
    registries: str | None = None
    default_endpoint: bool = True
    level: int = compress.DEFAULT_LEVEL
    timeout: float = DEFAULT_TIMEOUT
    jobs: int = DEFAULT_JOBS
    cache_dir: str | None = None  # None: no cache kept across runs
    sign_key: str | None = None  # PEM private key: also write NAME-ARCH.manifest.json.sig
    sbom: bool = False  # also write NAME-ARCH.spdx.json (and list it in the sha256sum file)


def build(opts: BuildOptions, progress: Progress | None = None) -> dict:
    """Build the bundle; returns the checksum manifest plus the paths written.

    `opts.arch` may name several architectures, comma-separated (`amd64,arm64`): one bundle
    each, with its own image list, checksum manifest and sha256sum-<arch>.txt, resolved from
    the same indexes and cache; every image is resolved for every architecture before any
    bundle is written, and the outputs of all of them appear together or not at all. The
    result is then {"bundles": [one result per architecture]}.
    """
    progress = progress or Progress(False)
    opts = _resolved(opts)
    _check_options(opts)
    arches = architectures(opts.arch)
    refs = imagelist.read(opts.images)
    if opts.cache_dir:
        cache.prepare(opts.cache_dir)  # refused now, not after the first download
    open_source = sources.from_options(
        opts.source, registries=opts.registries, default_endpoint=opts.default_endpoint,
        timeout=opts.timeout, jobs=opts.jobs, pull=opts.pull,
        challenges=Path(opts.cache_dir) / CHALLENGES if opts.cache_dir else None)
    extras = Extras.of(opts.sign_key, opts.sbom)
    out_dir = Path(opts.output_dir)
    created = _missing_dirs(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, str(out_dir)) from None
    try:
        results = _build_into(out_dir, opts, arches, refs, open_source, extras, progress)
    except BaseException:
        # A failed build leaves the disk as it was: directories it made go too (if empty).
        for directory in created:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    return results[0] if len(results) == 1 else {"bundles": results}


def architectures(arch: str) -> list[str]:
    """The architectures of `--arch` (one, or several comma-separated), each checked."""
    arches = [a.strip() for a in arch.split(",")]
    for a in arches:
        platform.for_arch(a)  # InputError for an unknown one
    if len(set(arches)) != len(arches):
        raise InputError(f"architecture list {arch!r} names one twice")
    return arches


class ArchitecturesFailed(BundlerError):
    """Images failed for several architectures; the one line says each architecture's."""

    def __init__(self, failures: list[tuple[str, BundlerError]]):
        said = {str(e) for _, e in failures}
        if len(said) == 1:  # one reason for all (the network, the daemon): said once
            super().__init__(f"{', '.join(arch for arch, _ in failures)}: {said.pop()}")
        else:
            super().__init__("; ".join(f"{arch}: {e}" for arch, e in failures))
        self.exit_code = max(e.exit_code for _, e in failures)
        causes = {e.cause for _, e in failures}
        self.cause = causes.pop() if len(causes) == 1 else None


def _missing_dirs(directory: Path) -> list[Path]:
    """`directory` and its ancestors that do not exist yet, innermost first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def _build_into(out_dir: Path, opts: BuildOptions, arches: list[str], refs: list[Reference],
                open_source: sources.Opener, extras: Extras, progress: Progress) -> list[dict]:
    try:
        with AtomicOutputs(out_dir) as outputs:
            cache_dir = Path(opts.cache_dir) if opts.cache_dir else None
            store = BlobStore(cache_dir / "blobs" if cache_dir else outputs.scratch_dir())
            frames = FrameCache(cache_dir / "frames") if cache_dir else None
            progress.say(f"pulling {_count(len(refs), 'image')}"
                         + (f" for {', '.join(arches)}" if len(arches) > 1 else ""))
            results = []
            for arch, images in _resolve_all(arches, refs, open_source, store):
                sink = BundleSink(outputs, name=opts.name, arch=arch, level=opts.level,
                                  frames=frames, extras=extras, progress=progress)
                # A compact build downloads its big gzip layers into scratch to stream them.
                scratch = outputs.scratch_dir() if opts.layers == mutate.UNCOMPRESSED else None
                with Stage(images, store, layers=opts.layers, jobs=opts.jobs, scratch=scratch,
                           progress=progress) as staged:
                    sink.write(staged)
                results.append({**sink.manifest,
                                "files": [str(out_dir / f) for f in sink.files]})
            outputs.commit()
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, f"writing to {out_dir}") from None
    return results


def _resolve_all(arches: list[str], refs: list[Reference], open_source: sources.Opener,
                 store: BlobStore) -> list[tuple[str, list[Image]]]:
    """Every architecture's images, before any is written: one run names every image that
    lacks one, and the index of each image is fetched once (then found in `store`)."""
    resolved, failures = [], []
    for arch in arches:
        source = open_source(platform.for_arch(arch), store)
        try:
            resolved.append((arch, source.images(refs)))
        except BundlerError as e:
            failures.append((arch, e))
    if failures:
        raise failures[0][1] if len(arches) == 1 else ArchitecturesFailed(failures)
    return resolved


def _resolved(opts: BuildOptions) -> BuildOptions:
    """Options with the layer mode settled, checked before any network or disk work."""
    if sources.check_kind(opts.source) == "docker":
        if opts.layers == mutate.PRESERVE:
            raise InputError("--layers preserve needs --source registry: a Docker daemon "
                             "exports uncompressed layers")
        return replace(opts, layers=mutate.UNCOMPRESSED)
    return replace(opts, layers=opts.layers or mutate.PRESERVE)


def _check_options(opts: BuildOptions) -> None:
    # Rejected before any network or disk work, so a typo costs nothing.
    if opts.layers not in mutate.LAYER_MODES:
        raise InputError(f"--layers {opts.layers!r}: want one of {', '.join(mutate.LAYER_MODES)}")
    compress.check_level(opts.level)
    if not opts.name or "/" in opts.name or opts.name.startswith("."):
        raise InputError(f"--name {opts.name!r}: want a plain file name stem")
    if opts.jobs < 1:
        raise InputError(f"--jobs {opts.jobs}: want at least 1")
    if opts.timeout <= 0:
        raise InputError(f"--timeout {opts.timeout}: want a positive number of seconds")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
