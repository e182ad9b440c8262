"""`bundler build`: images.txt -> one zstd-compressed image tarball plus its checksum files.

Data flow: image list -> registry source (manifests, configs) -> blob store (layers, both
digests checked) -> archive writer -> zstd -> checksum manifest. All outputs are written under
temporary names and renamed together at the end: when build() raises, no file exists under a
final name that was not there before, and no temporary is left behind.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

from bundler import compress, imagelist, mutate, platform
from bundler.atomic import AtomicOutputs
from bundler.cache import BlobStore, FrameCache
from bundler.config import DEFAULT_TIMEOUT, load_registries
from bundler.errors import BundlerError, EnvironmentFailure, InputError
from bundler.fetch import DEFAULT_JOBS
from bundler.progress import Progress
from bundler.reference import Reference
from bundler.sinks.bundle import OutputNames, _Extras, _write_outputs

DEFAULT_NAME = "k3s-airgap-images-multus"


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
    registries = load_registries(opts.registries, opts.default_endpoint)
    extras = _Extras.of(opts)
    out_dir = Path(opts.output_dir)
    created = _missing_dirs(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, str(out_dir)) from None
    try:
        results = _build_into(out_dir, opts, arches, refs, registries, extras, progress)
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
        super().__init__("; ".join(f"{arch}: {e}" for arch, e in failures))
        self.exit_code = max(e.exit_code for _, e in failures)


def _missing_dirs(directory: Path) -> list[Path]:
    """`directory` and its ancestors that do not exist yet, innermost first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def _build_into(out_dir: Path, opts: BuildOptions, arches: list[str], refs: list[Reference],
                registries, extras: _Extras, progress: Progress) -> list[dict]:
    try:
        with AtomicOutputs(out_dir) as outputs:
            cache_dir = Path(opts.cache_dir) if opts.cache_dir else None
            store = BlobStore(cache_dir / "blobs" if cache_dir else outputs.scratch_dir())
            frames = FrameCache(cache_dir / "frames") if cache_dir else None
            progress.say(f"pulling {_count(len(refs), 'image')}"
                         + (f" for {', '.join(arches)}" if len(arches) > 1 else ""))
            # Every architecture resolved first: one run names every image that lacks one, and
            # the index of each image is fetched once (then found in `store` by its digest).
            resolved, failures = [], []
            for arch in arches:
                source = _source(opts, registries, platform.for_arch(arch), store)
                try:
                    resolved.append((arch, source.images(refs)))
                except BundlerError as e:
                    failures.append((arch, e))
            if failures:
                raise failures[0][1] if len(arches) == 1 else ArchitecturesFailed(failures)
            results = []
            for arch, upstream in resolved:
                doc, files = _write_outputs(upstream, refs, outputs, store, frames,
                                            OutputNames.of(opts.name, arch),
                                            replace(opts, arch=arch), extras, progress)
                results.append({**doc, "files": [str(out_dir / f) for f in files]})
            outputs.commit()
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, f"writing to {out_dir}") from None
    return results


SOURCES = ("registry", "docker")


def _source(opts: BuildOptions, registries, want, store: BlobStore):
    # Imported here: the registry stack (requests) and the docker SDK are heavy, and verify
    # and place, which run on small airgapped nodes, import this module without them.
    if opts.source == "docker":
        from bundler.sources.docker import DockerSource

        return DockerSource(want, opts.pull, store)
    from bundler.sources.registry import RegistrySource

    return RegistrySource(registries, want, opts.timeout, store, jobs=opts.jobs)


def _resolved(opts: BuildOptions) -> BuildOptions:
    """Options with the layer mode settled, checked before any network or disk work."""
    if opts.source not in SOURCES:
        raise InputError(f"--source {opts.source!r}: want one of {', '.join(SOURCES)}")
    if opts.source == "docker":
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
