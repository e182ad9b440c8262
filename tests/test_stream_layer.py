"""Big gzip layers streamed into a compact bundle's compressor: the
same bytes as staging them first, a fallback when the gzip trailer's size is wrong, and the
staged path's errors when the layer is bad.

stage.STREAM_SIZE is lowered so small layers stream; "staged" builds raise it above every
layer, which is the path every layer took before streaming existed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from bundler import decompress, mutate, platform, reference, sources, stage
from bundler import mediatypes as mt
from bundler.__main__ import run as bundler_main
from bundler.atomic import AtomicOutputs
from bundler.cache import BlobStore
from bundler.errors import DigestMismatch
from bundler.sinks.bundle import BundleSink
from tests import imagegen as gen
from tests.conftest import STEM
from tests.registryseed import push_image

AMD64 = platform.for_arch("amd64")
NEVER = 1 << 62  # a STREAM_SIZE no layer reaches: every layer is staged first


def _image(layers: list[tuple[bytes, str, str]]) -> gen.TestImage:
    """An image of (blob, media type, diff_id) layers, the blobs exactly as given."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": [d for _, _, d in layers]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.DOCKER_CONFIG, "digest": gen.digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": m, "digest": gen.digest(b), "size": len(b)}
                   for b, m, _ in layers],
    }).encode()
    return gen.TestImage(manifest, mt.DOCKER_MANIFEST, config, [(b, m) for b, m, _ in layers],
                         [d for _, _, d in layers], {"architecture": "amd64", "os": "linux"})


def _tar(seed: int, size: int = 300_000) -> bytes:
    rng = random.Random(seed)
    # Half random, half repeated: something for zstd to find, several inflate chunks.
    return gen.tar_layer([("file", f"f{seed}", rng.randbytes(size // 2) + bytes(size // 2)),
                          ("file", f"g{seed}", rng.randbytes(1000) * (size // 2000))])


def _gz(tar: bytes) -> tuple[bytes, str, str]:
    return gzip.compress(tar, compresslevel=1, mtime=0), mt.DOCKER_LAYER_GZIP, gen.digest(tar)


def _members(tar: bytes, cuts: int = 3) -> tuple[bytes, str, str]:
    """A gzip blob of several members: its trailer's ISIZE is the last member's size alone."""
    step = len(tar) // cuts + 1
    blob = b"".join(gzip.compress(tar[i:i + step], compresslevel=1, mtime=0)
                    for i in range(0, len(tar), step))
    return blob, mt.DOCKER_LAYER_GZIP, gen.digest(tar)


def _push(fixture_registry, repo: str, img: gen.TestImage) -> str:
    push_image(fixture_registry.registry.url, repo, img, "v1")
    return f"docker.io/{repo}:v1"


def _build(fixture_registry, tmp: Path, refs: list[str], name: str,
           store: BlobStore | None = None) -> Path:
    """A compact bundle of `refs` staged and written by the bundle sink (level 3); its dir."""
    out = tmp / name
    out.mkdir()
    open_source = sources.from_options("registry",
                                       registries=str(fixture_registry.registries_yaml(tmp)),
                                       default_endpoint=False)
    images = open_source(AMD64, BlobStore(tmp / f"{name}-meta")).images(
        [reference.parse(r) for r in refs])
    with AtomicOutputs(out) as outputs:
        sink = BundleSink(outputs, name="k3s-airgap-images-multus", arch="amd64", level=3)
        with stage.Stage(images, store or BlobStore(tmp / f"{name}-store"),
                         layers=mutate.UNCOMPRESSED, scratch=outputs.scratch_dir()) as staged:
            sink.write(staged)
        outputs.commit()
    return out


class _Opened:
    """Counts the layers that were streamed (StreamedLayer.open), calling through."""

    def __init__(self, monkeypatch):
        self.count = 0
        real = stage.StreamedLayer.open

        def counted(streamed):
            self.count += 1
            return real(streamed)

        monkeypatch.setattr(stage.StreamedLayer, "open", counted)


def _same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_predicted_size_is_the_last_members_isize(tmp_path):
    tar = _tar(1)
    one, several = tmp_path / "one", tmp_path / "several"
    one.write_bytes(_gz(tar)[0])
    several.write_bytes(_members(tar)[0])
    assert decompress.predicted_size(one) == len(tar)
    assert 0 < decompress.predicted_size(several) < len(tar)
    for not_gzip in (tar, zstandard.ZstdCompressor().compress(tar), b"\x1f\x8b"):
        (tmp_path / "x").write_bytes(not_gzip)
        assert decompress.predicted_size(tmp_path / "x") is None


def test_streamed_layers_give_the_staged_bytes(fixture_registry, tmp_path, monkeypatch):
    # Gzip layers (one shared by both images), a zstd one and a plain one (never streamed).
    shared = _gz(_tar(10))
    first = _image([shared, _gz(_tar(11)), _gz(_tar(12, 2_000_000))])
    plain = _tar(13)
    second = _image([shared, (zstandard.ZstdCompressor().compress(_tar(14)), mt.OCI_LAYER_ZSTD,
                               gen.digest(_tar(14))), (plain, mt.DOCKER_LAYER, gen.digest(plain))])
    refs = [_push(fixture_registry, "stream/one", first),
            _push(fixture_registry, "stream/two", second)]
    monkeypatch.setattr(stage, "STREAM_SIZE", NEVER)
    staged = _build(fixture_registry, tmp_path, refs, "staged")
    monkeypatch.setattr(stage, "STREAM_SIZE", 0)
    opened = _Opened(monkeypatch)
    store = BlobStore(tmp_path / "store")
    streamed = _build(fixture_registry, tmp_path, refs, "streamed", store)
    assert opened.count == 3  # the three gzip layers, the shared one once
    _same_files(staged, streamed)
    # The streamed layers are in the store under their diff_ids, as staging leaves them: a
    # warm rebuild reads them from there, streams nothing, and writes the same bytes.
    for blob, _ in first.layers:
        assert not store.has(gen.digest(blob))
    for diff_id in first.diff_ids:
        assert store.verified(diff_id)
    warm = _build(fixture_registry, tmp_path, refs, "warm", store)
    assert opened.count == 3
    _same_files(staged, warm)


def _multi_member_image() -> gen.TestImage:
    """A normal gzip layer sorted before a multi-member one, so the restart must read the
    first one back from the store."""
    for seed in range(100, 200):
        normal, multi = _gz(_tar(seed)), _members(_tar(seed + 1000, 1_500_000))
        if normal[2] < multi[2]:
            return _image([multi, normal, _gz(_tar(seed + 2000))])
    raise AssertionError("no seed orders the layers")


def test_a_multi_member_layer_falls_back_to_the_same_bytes(fixture_registry, tmp_path,
                                                           monkeypatch, caplog):
    ref = _push(fixture_registry, "stream/multi", _multi_member_image())
    monkeypatch.setattr(stage, "STREAM_SIZE", NEVER)
    staged = _build(fixture_registry, tmp_path, [ref], "staged")
    monkeypatch.setattr(stage, "STREAM_SIZE", 0)
    with caplog.at_level(logging.INFO, logger="bundler.sinks.bundle"):
        streamed = _build(fixture_registry, tmp_path, [ref], "streamed")
    notes = [r.getMessage() for r in caplog.records if "again" in r.getMessage()]
    assert len(notes) == 1 and "bytes its gzip trailer says" in notes[0], notes
    assert f"{ref}: layer 0 (" in notes[0]  # names the image and layer, as staging errors do
    _same_files(staged, streamed)


def test_a_trailer_surely_wrong_is_staged_before_compressing(fixture_registry, tmp_path,
                                                            monkeypatch, caplog):
    # An empty last member (ISIZE 0, some tools end with one): less than half the blob, so
    # the layer is staged at once, with no restart of the body.
    tar = _tar(21)
    blob = _gz(tar)[0] + gzip.compress(b"", mtime=0)
    ref = _push(fixture_registry, "stream/emptylast",
                _image([(blob, mt.DOCKER_LAYER_GZIP, gen.digest(tar)), _gz(_tar(22))]))
    monkeypatch.setattr(stage, "STREAM_SIZE", NEVER)
    staged = _build(fixture_registry, tmp_path, [ref], "staged")
    monkeypatch.setattr(stage, "STREAM_SIZE", 0)
    opened = _Opened(monkeypatch)
    with caplog.at_level(logging.INFO, logger="bundler.sinks.bundle"):
        streamed = _build(fixture_registry, tmp_path, [ref], "streamed")
    assert opened.count == 1  # the other layer
    assert not [r for r in caplog.records if "again" in r.getMessage()]
    _same_files(staged, streamed)


def test_a_layer_that_is_not_gzip_after_all_is_staged(fixture_registry, tmp_path, monkeypatch):
    # A manifest may say gzip for zstd bytes (containerd sniffs): nothing to predict, so the
    # layer is staged before any of it is compressed.
    tar = _tar(20)
    ref = _push(fixture_registry, "stream/notgzip", _image([
        (zstandard.ZstdCompressor().compress(tar), mt.DOCKER_LAYER_GZIP, gen.digest(tar))]))
    monkeypatch.setattr(stage, "STREAM_SIZE", NEVER)
    staged = _build(fixture_registry, tmp_path, [ref], "staged")
    monkeypatch.setattr(stage, "STREAM_SIZE", 0)
    opened = _Opened(monkeypatch)
    streamed = _build(fixture_registry, tmp_path, [ref], "streamed")
    assert opened.count == 0
    _same_files(staged, streamed)


@pytest.mark.parametrize("off_by", [1, -1, 1 << 20])
def test_the_reader_checks_the_predicted_size(tmp_path, off_by):
    tar = _tar(30)
    blob, _, diff_id = _gz(tar)
    path = tmp_path / "blob"
    path.write_bytes(blob)
    store = BlobStore(tmp_path / "store")
    from bundler.image import Descriptor, Layer

    lay = Layer(Descriptor(mt.DOCKER_LAYER_GZIP, gen.digest(blob), len(blob)), diff_id,
                lambda: open(path, "rb"))
    streamed = stage.StreamedLayer(path, lay, store, "L", len(tar) + off_by)
    reader = streamed.open()
    want = "more than" if off_by < 0 else f"{len(tar)} bytes, not the {len(tar) + off_by}"
    with pytest.raises(stage.Mispredicted, match=want):
        try:
            while reader.read(65536):
                pass
        finally:
            reader.close()
    assert not store.has(diff_id)
    assert not list((tmp_path / "store" / "sha256").iterdir())  # no temporary left either
    # The prediction right: every byte, and the plain copy committed.
    reader = stage.StreamedLayer(path, lay, store, "L", len(tar)).open()
    got = []
    while chunk := reader.read(65536):
        got.append(chunk)
    reader.close()
    assert b"".join(got) == tar
    assert store.verified(diff_id)


def _cli(monkeypatch, capsys, registries: Path, tmp: Path, ref: str, stream_size: int,
         cache: Path | None = None) -> tuple[int, str]:
    """`bundler build` of `ref` in this process (so STREAM_SIZE can be set): code, stderr."""
    monkeypatch.setattr(stage, "STREAM_SIZE", stream_size)
    (tmp / "images.txt").write_text(ref + "\n")
    code = bundler_main(["build", "--images", str(tmp / "images.txt"),
                         "--registries", str(registries),
                         "--no-default-endpoint", "--layers", "uncompressed", "--level", "3",
                         "--output-dir", str(tmp / "dist"),
                         "--cache-dir", str(cache or tmp / "cache"), "--quiet"])
    return code, capsys.readouterr().err


def _bad_layer_is_refused_alike(monkeypatch, capsys, fixture_registry, tmp_path, ref,
                                diff_id: str, fragment: str) -> None:
    runs = []
    for name, size in (("staged", NEVER), ("streamed", 0)):
        (tmp_path / name).mkdir()
        runs.append(_cli(monkeypatch, capsys, fixture_registry.registries_yaml(tmp_path / name),
                         tmp_path / name, ref, size))
        assert not (tmp_path / name / "dist").exists()
        blobs = tmp_path / name / "cache" / "blobs" / "sha256"
        assert not (blobs / diff_id.split(":")[1]).exists()
        assert not [p for p in blobs.iterdir() if p.name.endswith(".partial")]
    assert runs[0] == runs[1]
    code, err = runs[1]
    assert code == 1 and len(err.strip().splitlines()) == 1 and fragment in err, err


def test_a_diff_id_mismatch_is_the_staged_error(fixture_registry, tmp_path, monkeypatch, capsys):
    tar, other = _tar(40), _tar(41)
    blob, media, _ = _gz(tar)
    ref = _push(fixture_registry, "stream/wrongdiff",
                _image([(blob, media, gen.digest(other))]))
    _bad_layer_is_refused_alike(monkeypatch, capsys, fixture_registry, tmp_path, ref,
                                gen.digest(other), "diff_id mismatch: config says")


def test_an_isize_larger_than_the_content_is_the_staged_error(fixture_registry, tmp_path,
                                                               monkeypatch, capsys):
    # zlib checks ISIZE against what it inflated, so a trailer that says more than the member
    # holds is a corrupt gzip stream, not a misprediction to recover from: the build fails
    # exactly as the staged path fails.
    tar = _tar(50)
    blob = _gz(tar)[0]
    blob = blob[:-4] + struct.pack("<I", len(tar) + 512)
    ref = _push(fixture_registry, "stream/bigisize",
                _image([(blob, mt.DOCKER_LAYER_GZIP, gen.digest(tar))]))
    _bad_layer_is_refused_alike(monkeypatch, capsys, fixture_registry, tmp_path, ref,
                                gen.digest(tar), "cannot decompress")


def test_ctrl_c_while_a_layer_streams_leaves_nothing(fixture_registry, tmp_path):
    # Level 19 on 24 MB of half-random bytes: the stream lasts seconds, long enough to
    # interrupt while the layer's plain copy is being written into the store.
    tar = _tar(60, 24 << 20)
    ref = _push(fixture_registry, "stream/interrupted", _image([_gz(tar)]))
    (tmp_path / "images.txt").write_text(ref + "\n")
    code = ("import sys, bundler.stage\nbundler.stage.STREAM_SIZE = 0\n"
            "from bundler.__main__ import run\nraise SystemExit(run(sys.argv[1:]))\n")
    cache = tmp_path / "cache"
    blobs = cache / "blobs" / "sha256"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "build", "--images", str(tmp_path / "images.txt"),
         "--registries", str(fixture_registry.registries_yaml(tmp_path)),
         "--no-default-endpoint", "--layers", "uncompressed", "--level", "19",
         "--output-dir", str(tmp_path / "dist"), "--cache-dir", str(cache)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
            blobs.is_dir() and [p for p in blobs.iterdir() if p.name.endswith(".partial")
                                and p.stat().st_size > 1 << 20]):
        time.sleep(0.02)
    assert proc.poll() is None, "the build ended before its layer was streamed"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["bundler: error: interrupted"]
    assert not (tmp_path / "dist").exists()
    for entry in blobs.iterdir():
        if not entry.name.endswith(".partial"):
            assert hashlib.sha256(entry.read_bytes()).hexdigest() == entry.name
    assert not (blobs / gen.digest(tar).split(":")[1]).exists()


def test_the_staged_error_names_the_layer(fixture_registry, tmp_path, monkeypatch):
    # The sink on its own raises the error a staged layer raises (DigestMismatch).
    tar, other = _tar(70), _tar(71)
    blob, media, _ = _gz(tar)
    ref = _push(fixture_registry, "stream/wrongdiff2", _image([(blob, media, gen.digest(other))]))
    monkeypatch.setattr(stage, "STREAM_SIZE", 0)
    with pytest.raises(DigestMismatch, match=f"{ref}: layer 0 .*diff_id mismatch"):
        _build(fixture_registry, tmp_path, [ref], "streamed")
    assert not (tmp_path / "streamed" / f"{STEM}.tar.zst").exists()


@pytest.mark.parametrize("corrupted", [1, 2])
def test_a_blob_corrupted_in_transit_is_fetched_again_or_refused_alike(
        fixture_registry, tmp_path, monkeypatch, capsys, corrupted):
    # The download checks the blob as staging does: a flipped byte once is fetched again
    # (same bundle), every time is staging's one-line digest error (nothing kept).
    from tests.faultproxy import RegistryFront
    from tests.servers import write_registries_yaml

    tar = _tar(80 + corrupted)
    blob, media, diff_id = _gz(tar)
    ref = _push(fixture_registry, f"stream/transit{corrupted}", _image([(blob, media, diff_id)]))
    hex_ = gen.digest(blob).split(":")[1]
    served: list[str] = []

    def flip(h, server):
        if h.command != "GET" or hex_ not in h.path:
            return False
        served.append(h.path)
        body = bytearray(front.upstream_body(h.path))
        if len(served) % 2 == 1 or corrupted == 2:
            body[len(body) // 2] ^= 1
        RegistryFront.reply(h, 200, bytes(body), {"Content-Type": "application/octet-stream"})
        return True

    front = RegistryFront(fixture_registry.registry.url, fault=flip)
    try:
        runs, gets = [], []
        for name, size in (("staged", NEVER), ("streamed", 0)):
            tmp = tmp_path / name
            tmp.mkdir()
            yaml = write_registries_yaml(tmp / "registries.yaml", {"docker.io": [front.url]})
            runs.append(_cli(monkeypatch, capsys, yaml, tmp, ref, size))
            gets.append(len(served))
            served.clear()
    finally:
        front.stop()
    assert runs[0] == runs[1]
    assert gets == [2, 2]  # each fetched the blob again once
    if corrupted == 1:
        assert runs[1][0] == 0, runs[1][1]
        _same_files(tmp_path / "staged" / "dist", tmp_path / "streamed" / "dist")
    else:
        code, err = runs[1]
        assert code == 1 and len(err.strip().splitlines()) == 1 and "digest mismatch" in err
        assert not (tmp_path / "streamed" / "dist").exists()


def test_a_store_that_cannot_take_the_plain_copy_fails_as_staging_does(
        fixture_registry, tmp_path, monkeypatch, capsys):
    # The streamed copy's write fails (a full cache disk): the layer is staged the normal way,
    # which fails the same way, with staging's one line and exit code.
    from tests.cli_helpers import small_disk

    tar = _tar(90, 4_000_000)
    ref = _push(fixture_registry, "stream/fullcache", _image([_gz(tar)]))
    opened = _Opened(monkeypatch)
    runs = []
    for name, size in (("staged", NEVER), ("streamed", 0)):
        tmp = tmp_path / name
        tmp.mkdir()
        with small_disk(tmp / "small", "1m") as small:
            code, err = _cli(monkeypatch, capsys, fixture_registry.registries_yaml(tmp), tmp,
                             ref, size, cache=small / "cache")
            blobs = small / "cache" / "blobs" / "sha256"
            assert not (blobs / gen.digest(tar).split(":")[1]).exists()
            assert not [p for p in blobs.iterdir() if p.name.endswith(".partial")]
        assert not (tmp / "dist").exists()
        runs.append((code, err.replace(str(tmp), "TMP")))
    assert opened.count == 1
    assert runs[0][0] == runs[1][0] == 3
    for _, err in runs:
        assert len(err.strip().splitlines()) == 1 and "no space left on device" in err, err
        assert "/small/cache/blobs/sha256: no space" in err, err  # the disk that filled up
