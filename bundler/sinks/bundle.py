"""The bundle writer (cf. ggcr's tarball.Write): staged images -> NAME-ARCH.tar.zst and the
files beside it, its image list, checksum manifest, sha256sum-ARCH.txt (and, when asked, the
manifest's signature and an SPDX SBOM).

It only writes: the images come from the stage (stage.py), which pulls and checks their
layers; the writer cuts the tar into zstd frames (reusing the frame cache's), compresses them,
and checks the bundle it wrote before anything vouches for it.

Every file is written under a temporary name through the AtomicOutputs the sink is given and
the caller commits: several architectures' files are committed together (build._build_into).
"""

from __future__ import annotations

import gc
import logging
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bundler import imagelist, mediatypes, mutate
from bundler.atomic import AtomicOutputs
from bundler.bundleformat import archive, checksums, compress
from bundler.cache import FrameCache
from bundler.checks.verify import WrittenCheck
from bundler.digest import HashingWriter, hex_of, sha256_digest
from bundler.errors import BundlerError
from bundler.image import Image
from bundler.progress import Bar, Progress
from bundler.stage import Mispredicted, Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Extras:
    """What a build writes beside the four files when asked, checked before any download."""

    key: bytes | None = None
    password: bytes | None = None
    key_name: str = ""
    sbom_created: str | None = None
    # $SOURCE_DATE_EPOCH, recorded in the checksum manifest (and so signed with it): what
    # `verify --not-before` compares. None when unset: the manifest is undated.
    source_date_epoch: int | None = None

    @classmethod
    def of(cls, sign_key: str | None = None, with_sbom: bool = False,
           environ: Mapping[str, str] | None = None) -> Extras:
        """What a build with these options writes beside the bundle, from `environ` (default:
        os.environ); InputError for a bad $SOURCE_DATE_EPOCH, SigningKeyError for a key that
        cannot sign."""
        epoch = checksums.source_date_epoch(environ)
        # signing and sbom are imported only when asked for: most builds need neither.
        key = password = None
        if sign_key:
            from bundler.bundleformat import signing

            key, password = signing.read_key(sign_key), signing.password_from_env(environ)
            # A wrong password or a key that is not P-256 fails now, not after the pull.
            signing.sign(b"", key, password, key_name=sign_key)
        created = None
        if with_sbom:
            from bundler.bundleformat import sbom

            created = sbom.created_time(environ)
        return cls(key, password, sign_key or "", created, epoch)


@dataclass(frozen=True)
class OutputNames:
    """The four files a build writes into the output directory."""

    bundle: str
    image_list: str
    manifest: str
    sums: str
    signature: str  # with --sign-key (signing.signature_path)
    sbom: str  # with --sbom (sbom.file_name)

    @classmethod
    def of(cls, name: str, arch: str) -> OutputNames:
        suffix = arch.replace("/", "-")
        stem = f"{name}-{suffix}"
        return cls(f"{stem}.tar.zst", f"{stem}.txt", f"{stem}.manifest.json",
                   f"sha256sum-{suffix}.txt", f"{stem}.manifest.json.sig", f"{stem}.spdx.json")


class BundleSink:
    """One architecture's bundle and the files beside it (the Sink protocol, bundler.sinks).

    write(staged) writes the stage's images (stage.Stage: layers checked against their
    digests as they are pulled) in its layer form under temporary names through `outputs`,
    and leaves the checksum manifest in `manifest` and the file names, the bundle first, in
    `files`. Nothing has a final name until the caller's outputs.commit(); if write raises,
    the AtomicOutputs block removes every temporary. The images must be linux/`arch` images.
    `frames` keeps compressed frames across runs, by content.
    """

    def __init__(self, outputs: AtomicOutputs, *, name: str, arch: str,
                 level: int = compress.DEFAULT_LEVEL, frames: FrameCache | None = None,
                 extras: Extras = Extras(), progress: Progress | None = None):
        self._outputs = outputs
        self._frames = frames
        self.names = OutputNames.of(name, arch)
        self._arch, self._level = arch, level
        self._extras = extras
        self._progress = progress or Progress(False)
        self.manifest: dict = {}
        self.files: list[str] = []

    def write(self, staged: Stage) -> None:
        upstream, names = staged.upstream, self.names
        bundle_path = self._outputs.temp(names.bundle)
        check = WrittenCheck(names.bundle, {
            layer.descriptor.digest: layer.diff_id for image in upstream for layer in image.layers
            if mediatypes.is_compressed_layer(layer.descriptor.media_type)})
        try:
            size, sha, written = self._write_bundle(staged, bundle_path, check.feed)
            doc = checksums.manifest_document(
                written, upstream, arch=self._arch, layers=staged.layers, level=self._level,
                window_log=compress.WINDOW_LOG, bundle_file=names.bundle, bundle_size=size,
                bundle_sha256=sha, source_date_epoch=self._extras.source_date_epoch,
            )
            _self_check(check.finish(bundle_path, size, sha, doc), names.bundle)
        finally:
            check.abort()
        self._write_beside(doc, upstream, sha)

    def _write_beside(self, doc: dict, upstream: list[Image], sha: str) -> None:
        """The image list, checksum manifest, sha256sum file (and signature and SBOM) of the
        bundle written, whose sha256 is `sha`."""
        names, outputs = self.names, self._outputs
        # Sources return one image per reference, in the list's order (Source.images).
        list_text = imagelist.format_list([image.reference for image in upstream]).encode()
        files = [names.bundle]

        def put(name: str, data: bytes) -> None:
            outputs.temp(name).write_bytes(data)
            files.append(name)

        put(names.image_list, list_text)
        manifest = checksums.dumps_manifest(doc)
        put(names.manifest, manifest)
        ours = {names.bundle: sha, names.image_list: hex_of(sha256_digest(list_text))}
        extras = self._extras
        if extras.key is not None:
            from bundler.bundleformat import signing

            put(names.signature,
                signing.sign(manifest, extras.key, extras.password, key_name=extras.key_name))
        else:
            outputs.remove(names.signature)  # an earlier build's, of another manifest
        if extras.sbom_created is not None:
            from bundler.bundleformat import sbom

            spdx = sbom.dumps(sbom.document(doc, created=extras.sbom_created))
            put(names.sbom, spdx)
            ours[names.sbom] = hex_of(sha256_digest(spdx))
        else:
            outputs.remove(names.sbom)  # an earlier build's, of other images
        # Other architectures' lines in an existing sha256sum file stay (checksums.merged_sums),
        # not those of this architecture's files that this build does not write.
        old = checksums.read_sums(outputs.directory / names.sums)
        old.pop(names.sbom, None)
        put(names.sums, checksums.merged_sums(old, ours))
        self.manifest, self.files = doc, files

    def _write_bundle(self, staged: Stage, path: Path, plain: compress.PlainSink
                      ) -> tuple[int, str, list[Image]]:
        """Size and sha256 of the bundle written to `path`, and the images as written."""
        frames, level = self._frames, self._level
        with open(path, "wb") as f, self._progress.bar("compress") as bar:
            hashed = HashingWriter(f)
            if staged.uncompressed:
                # A compact bundle's body is compressed into a scratch file first.
                images = _write_compact(staged, hashed, level, frames,
                                        self._outputs.scratch_dir(), bar, plain)
            else:
                images = _write_preserve(staged, hashed, level, frames, bar, plain)
        return hashed.size, hashed.hash.hexdigest(), images


class SelfCheckFailed(BundlerError):
    """The file build wrote is not the bundle its checksum manifest describes."""


def _self_check(report, name: str) -> None:
    """Nothing vouches for a bundle (checksum files, a signature, an SBOM) that failed
    verify's checks on the bytes written (verify.WrittenCheck): everything in it was checked
    when pulled or read from the cache, and this proves the file itself, so neither a writer
    bug, a disk that returns other bytes, nor a cache entry that slipped past its own check
    can be signed."""
    if not report.ok:
        more = f" (and {report.problem_count - 1} more)" if report.problem_count > 1 else ""
        raise SelfCheckFailed(f"{name}: the bundle just written fails verification: "
                              f"{report.problems[0]}{more}; nothing was kept")


def frame_groups(segments: list[archive.Segment], mode: str, level: int
                 ) -> list[compress.FrameGroup]:
    """How the tar is cut into zstd frames.

    preserve: one frame per segment, so each blob's frame is cached and reused on its own, and
    already-compressed (gzip/zstd) layers get level 1: zstd at level 16 gains under 0.3% on
    them at 20 times the time (measured on the stand-in images: 43.40 vs 43.48 MB, 5.9 vs
    0.3 s). uncompressed: the metadata, then everything else as one frame, so zstd's long
    window also finds what layers share (per-layer frames measured 3% larger, with zstd's
    own job size: 33.40 vs 32.44 MB), and the big frame can be compressed while layers still
    arrive.
    """
    if mode == mutate.UNCOMPRESSED:
        return [compress.FrameGroup((segments[0],), level),
                compress.FrameGroup(tuple(segments[1:]), level, streamed=True)]
    return [compress.FrameGroup((s,), level if s.compressible else 1) for s in segments]


def _write_preserve(staged: Stage, out: HashingWriter, level: int, frames: FrameCache | None,
                    bar: Bar, plain: compress.PlainSink) -> list[Image]:
    """The preserve bundle: one frame per member, the cached ones copied, the others
    compressed as their blobs arrive."""
    images = staged.images()
    groups = frame_groups(archive.segments(images), mutate.PRESERVE, level)
    missing = [g for g in groups if not (frames and frames.lookup(g.key))]
    needed = [s.digest for g in missing for s in g.segments if s.digest]
    staged.expect(needed)
    total = sum(g.size for g in groups)
    bar.start(total, f"compressing {_mb(total)}")
    # Start every download a missing frame needs, so they overlap the compression.
    staged.prefetch(needed)
    compress.write_frames(groups, out, frames, on_bytes=bar.update, plain=plain)
    return images


def _write_compact(staged: Stage, out: HashingWriter, level: int, frames: FrameCache | None,
                   scratch: Path, bar: Bar, plain: compress.PlainSink) -> list[Image]:
    """The uncompressed-layers bundle, its big frame compressed while layers still arrive.

    The metadata (which needs every layer's size) is its own first frame; the rest is
    compressed to a scratch file layer by layer, in tar order, as each one is staged
    (_compress_layers), and appended after it.
    """
    staged.expect()
    weights = _layer_weights(staged)  # None: their sizes are known once pulled
    total = None if weights is None else sum(weights.values())
    blobs = sum(layer.descriptor.size for layer, _ in staged.wanted.values())
    bar.start(total, f"compressing {_mb(total)} of layers" if total is not None else
              f"compressing {_mb(blobs)} of layers (gzip as the registry stores them; the "
              "bar counts them uncompressed, its total known once they are pulled)")
    if frames and staged.all_stored():
        # Everything staged before: if both frames are cached too, this is a copy.
        images = staged.images()
        groups = frame_groups(archive.segments(images), mutate.UNCOMPRESSED, level)
        if all(frames.lookup(g.key) for g in groups):
            compress.write_frames(groups, out, frames, plain=plain)
            bar.update(total)
            return images
    big = scratch / "frame.zst"
    images, segments = _compress_layers(staged, big, level,
                                        _ByLayer(bar, len(staged.wanted)), weights)
    head, rest = frame_groups(segments, mutate.UNCOMPRESSED, level)
    # The body's two copies (into the frame cache, after the metadata into the bundle) are
    # each a read, a hash and a write: on two threads they overlap (0.6 s on one thread for
    # a 1 GiB layer's 320 MB body).
    keeping = _Background(lambda: frames.put(rest.key, big)) if frames else None
    compress.write_frames([head], out, frames, plain=plain)
    with open(big, "rb") as f:
        tee = compress.plain_tee(out, plain, head.size)
        shutil.copyfileobj(f, tee, 1 << 20)
        tee.close()
    if keeping:
        keeping.result()  # not waited for if the copy failed: a failed build ends at once
    return images


def _compress_layers(staged: Stage, big: Path, level: int, meter: _ByLayer,
                     weights: dict[str, int] | None
                     ) -> tuple[list[Image], list[archive.Segment]]:
    """Compress a compact bundle's body into `big`, every layer as it arrives; the images as
    written, and the tar's segments.

    A big gzip layer is streamed (stage.StreamedLayer): inflated into the compressor under a
    tar header that gives the size its gzip trailer predicts. If the prediction fails
    (several gzip members, 4 GiB or more) the layer is staged the normal way and the body is
    compressed again from its start: one zstd frame cannot be taken back in part. The layers
    streamed before it are read back from the store then.
    """
    staged.start()
    while True:
        try:
            return _compress_body(big, level, _arriving(staged, meter, weights), staged, meter)
        except Mispredicted as e:
            log.info("%s; staging it and compressing the bundle's body again", e)
            mispredicted = e.layer
        # Outside the except block, so the abandoned frame's compressor (held by the
        # exception's traceback) is freed before the layer is staged and a new one made.
        gc.collect()
        staged.restage(mispredicted)
        meter.restart()


def _arriving(staged: Stage, meter: _ByLayer, weights: dict[str, int] | None
              ) -> Iterator[archive.Segment]:
    """The body's layer members, in tar order, as they arrive; each counted on the meter by
    its weight, or by its size once known when no weights were known in advance."""
    for arrival in staged.arriving():
        segment = archive.blob_segment(arrival.digest, arrival.size, arrival.open, True)
        meter.add(segment.size, arrival.size if weights is None else weights[arrival.digest])
        yield segment


class _Background(threading.Thread):
    """`work` run on a daemon thread (Ctrl-C does not wait for it); result() joins it and
    raises what it raised."""

    def __init__(self, work: Callable[[], object]):
        super().__init__(daemon=True, name="background")
        self._work = work
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._work()
        except BaseException as e:  # noqa: BLE001 - raised by result(), in the caller's thread
            self._error = e

    def result(self) -> None:
        self.join()
        if self._error is not None:
            raise self._error


def _layer_weights(staged: Stage) -> dict[str, int] | None:
    """What each layer counts for on the compress bar: its size, when every layer's is known.

    The compressor reads uncompressed layers, but their size is known only once a layer is
    pulled (a manifest gives the gzip blob's size). When every layer is already staged, or
    stored uncompressed upstream, the total is known before the first byte; otherwise (None)
    the bar counts the bytes compressed and gets its total once the last layer is reached.
    """
    sizes = {digest: staged.plain_size(digest) for digest in staged.wanted}
    known = {digest: size for digest, size in sizes.items() if size is not None}
    return known if len(known) == len(sizes) else None


class _ByLayer:
    """Turns bytes compressed (in tar order) into the compress bar's units: each layer's tar
    member counts as its weight, spread over its bytes; what follows the layers counts 0.
    Once all `layers` are added the bar's total is known, if it was not (Bar.set_total)."""

    def __init__(self, bar: Bar, layers: int):
        self._bar = bar
        self._layers = layers
        self._spans: list[tuple[int, int, int]] = []  # (start, size, weight), in tar order
        self._end = 0
        self._pos = 0
        self._shown = 0
        self._lock = threading.Lock()

    def restart(self) -> None:
        """The body is compressed again from its start: the bar stays where it was until
        the new pass gets past it."""
        with self._lock:
            self._spans, self._end, self._pos = [], 0, 0

    def add(self, size: int, weight: int) -> None:
        with self._lock:
            self._spans.append((self._end, size, weight))
            self._end += size
            weights = sum(w for _, _, w in self._spans)
            last = len(self._spans) == self._layers
        if last:
            self._bar.set_total(weights)

    def __call__(self, n: int) -> None:
        with self._lock:
            self._pos += n
            done = 0
            for start, size, weight in self._spans:
                if self._pos >= start + size:
                    done += weight
                elif self._pos > start:
                    done += weight * (self._pos - start) // size
            step, self._shown = done - self._shown, max(done, self._shown)
        if step > 0:
            self._bar.update(step)


def _compress_body(big: Path, level: int, arriving: Iterator[archive.Segment], staged: Stage,
                   on_bytes: Callable[[int], object]
                   ) -> tuple[list[Image], list[archive.Segment]]:
    """Compress the layers as they arrive, then the configs, manifests and end, into `big`.

    A function of its own so the compressor (its context is most of our memory) is freed
    before the metadata frame gets one of its own.
    """
    done: dict = {}

    def body():
        written = []
        for segment in arriving:
            written.append(segment.key)
            yield segment
        # Every layer is staged now: the images, and so the rest of the tar, are known.
        done["images"] = staged.images()
        done["segments"] = segments = archive.segments(done["images"])
        if [s.key for s in segments[1 : 1 + len(written)]] != written:
            raise AssertionError("archive.segments() no longer puts layers first, sorted")
        yield from segments[1 + len(written):]

    with open(big, "wb") as f:
        compress.compress_frame(body(), level, f, on_bytes)
    return done["images"], done["segments"]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
