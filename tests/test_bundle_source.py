"""BundleSource: a bundle read back as images, checked as it is read."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import zstandard

from bundler import reference
from bundler.bundleformat import compress
from bundler.checks.verify import verify
from bundler.errors import DigestMismatch, InputError
from bundler.sources import Source
from bundler.sources.bundle import (
    BundleSource,
    frame_index,
    image_of,
    read_metadata,
)
from tests.cli_helpers import read_manifest
from tests.conftest import STEM


def _read_all(stream) -> bytes:
    chunks = []
    try:
        while chunk := stream.read(1 << 16):
            chunks.append(chunk)
    finally:
        stream.close()
    return b"".join(chunks)


@pytest.mark.parametrize("build", ["p1", "u1"])
def test_images_match_the_checksum_manifest(builds, build):
    source = BundleSource(builds[build] / f"{STEM}.tar.zst")
    assert isinstance(source, Source)
    recorded = {i["reference"]: i for i in read_manifest(builds[build])["images"]}
    images = source.images()
    assert [str(i.reference) for i in images] == list(recorded)
    for image in images:
        item = recorded[str(image.reference)]
        assert image.manifest_digest == item["manifestDigest"]
        assert image.config_descriptor.digest == item["configDigest"]
        assert str(image.platform) == item["platform"]
        assert [(x.descriptor.digest, x.descriptor.size, x.diff_id) for x in image.layers] == \
            [(x["digest"], x["size"], x["diffID"]) for x in item["layers"]]
        for layer in image.layers:
            data = _read_all(layer.open())
            assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.descriptor.digest
    # image(ref) finds one by its name.
    ref = reference.parse("busybox:1.36.1")
    assert source.image(ref).manifest_digest == recorded[str(ref)]["manifestDigest"]
    with pytest.raises(InputError, match="not in"):
        source.image(reference.parse("busybox:nope"))
    picked = source.images([ref, images[0].reference])
    assert [i.reference for i in picked] == [ref, images[0].reference]
    with pytest.raises(InputError, match="busybox:nope, docker.io/library/x:1: not in"):
        source.images([reference.parse("busybox:nope"), reference.parse("x:1")])


def test_preserve_blobs_each_start_a_frame_compact_ones_do_not(builds):
    preserve = frame_index(builds["p1"] / f"{STEM}.tar.zst")
    compact = frame_index(builds["u1"] / f"{STEM}.tar.zst")
    layers = {x["digest"] for i in read_manifest(builds["p1"])["images"] for x in i["layers"]}
    assert layers <= preserve.keys()
    assert len(compact) <= 1  # only the first blob starts the one big frame


def _flip_in_frame(src: Path, dst: Path, start: int, end: int) -> None:
    # The middle of the frame: the layer's bytes (gzip, stored by zstd as they are), not
    # the tar header at its start.
    data = bytearray(src.read_bytes())
    data[(start + end) // 2] ^= 0x55
    dst.write_bytes(bytes(data))


def test_a_corrupted_layer_fails_its_read_not_the_others(tmp_path, builds):
    src = builds["p1"] / f"{STEM}.tar.zst"
    frames = frame_index(src)
    item = read_manifest(builds["p1"])["images"][0]
    victim = item["layers"][-1]["digest"]
    bad = tmp_path / f"{STEM}.tar.zst"
    starts = sorted(offset for offset, _ in frames.values())
    start = frames[victim][0]
    _flip_in_frame(src, bad, start, starts[starts.index(start) + 1])
    source = BundleSource(bad)
    image = source.image(reference.parse(item["reference"]))
    for layer in image.layers:
        if layer.descriptor.digest == victim:
            with pytest.raises(DigestMismatch):
                _read_all(layer.open())
        else:
            _read_all(layer.open())


def test_not_a_bundle_is_one_input_error(tmp_path):
    plain = tmp_path / "x.tar.zst"
    plain.write_bytes(b"not zstd at all")
    with pytest.raises(InputError, match="x.tar.zst"):
        read_metadata(plain)
    with pytest.raises(InputError, match="cannot read"):
        read_metadata(tmp_path / "missing.tar.zst")


def test_images_from_what_verify_kept_are_the_sources_images(builds):
    """push builds its images from verify's documents with image_of: the same images
    BundleSource reads, and a missing document or a config manifest.json does not name is
    refused."""
    path = builds["p1"] / f"{STEM}.tar.zst"
    report = verify(path)
    entries = read_metadata(path).entries
    refused = []

    def opener(desc, what):
        return lambda: refused.append(desc.digest)

    kept = [image_of(e, report.documents, opener) for e in entries]
    read = BundleSource(path).images()
    assert [(i.reference, i.manifest, i.config, i.platform, i.layers) for i in kept] == \
        [(i.reference, i.manifest, i.config, i.platform, i.layers) for i in read]
    kept[0].layers[0].open()
    assert refused == [kept[0].layers[0].descriptor.digest]
    missing = {d: b for d, b in report.documents.items() if d != entries[0].config_digest}
    with pytest.raises(DigestMismatch, match="was not read as a document"):
        image_of(entries[0], missing, opener)
    other = dataclasses.replace(entries[0], config_digest=entries[1].config_digest)
    with pytest.raises(DigestMismatch, match="manifest.json says"):
        image_of(other, report.documents, opener)


def test_a_tar_that_never_reaches_its_manifests_is_cut_off(tmp_path, builds):
    """A compact bundle's documents are read by walking the whole tar: a zstd bomb in front
    of them (1.1 GiB of zeros from a few KB) stops at verify's inflation bound, one line."""
    import zstandard

    from bundler.bundleformat import compress
    from tests import tarcraft

    src = builds["u1"] / f"{STEM}.tar.zst"
    with open(src, "rb") as f:
        second = [fr.offset for fr in compress.frames(compress.Seeking(f))][1]
        f.seek(0)
        front = f.read(second)  # the metadata frame, as the build wrote it
    size = 1100 << 20
    bomb = tmp_path / f"{STEM}.tar.zst"
    with open(bomb, "wb") as f:
        f.write(front)
        with zstandard.ZstdCompressor(level=1).stream_writer(f, closefd=False) as w:
            w.write(tarcraft.header("blobs/sha256/" + "ab" * 32, size))
            zeros = bytes(1 << 20)
            for _ in range(size >> 20):
                w.write(zeros)
            w.write(tarcraft.END)
    assert bomb.stat().st_size < 1 << 20
    source = BundleSource(bomb)
    with pytest.raises(InputError) as e:
        source.images()
    assert str(bomb) in str(e.value) and "decompresses to more than" in str(e.value)


def _rchar() -> int:
    """Bytes this process has read through read()/pread() so far (the kernel's count)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


@pytest.mark.parametrize("content", [0, 512])
def test_small_frames_cost_a_header_read_each(tmp_path, builds, content):
    """4,000 small frames after a preserve bundle (zstd -d and containerd skip empty ones;
    512 zero bytes are a tar end block): frame_index finds the same blobs, reading at most
    each frame's own bytes. Each used to make zstandard's reader read on to the end of the
    file: 4,000 empty frames read 64 MB (2.5 s), 16,000 took 28 s."""
    src = builds["p1"] / f"{STEM}.tar.zst"
    small = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(content))
    padded = tmp_path / f"{STEM}.tar.zst"
    padded.write_bytes(src.read_bytes() + small * 4000)
    before = _rchar()
    assert frame_index(padded) == frame_index(src)
    read = _rchar() - before
    size = src.stat().st_size
    assert read < 2 * size + 4000 * 64 + (1 << 20), (read, size)


def test_more_frames_than_a_bundle_can_have_is_refused(tmp_path, builds):
    """Skippable frames count too. verify reads at most MAX_MEMBERS members, a frame per
    member run plus the front and the end: a file of that many frames is indexed, one frame
    more (800 KB of skippable frames) is refused in one line instead of walked (1M of them
    took 4.5 s)."""
    from bundler.checks import verify as verify_module

    src = builds["p1"] / f"{STEM}.tar.zst"
    skippable = b"\x50\x2a\x4d\x18" + bytes(4)
    with open(src, "rb") as f:
        frames_of_src = len(list(compress.frames(compress.Seeking(f))))
    most = verify_module.MAX_MEMBERS + 2
    under = tmp_path / "under.tar.zst"
    under.write_bytes(src.read_bytes() + skippable * (most - frames_of_src))
    assert frame_index(under) == frame_index(src)
    bad = tmp_path / f"{STEM}.tar.zst"
    bad.write_bytes(src.read_bytes() + skippable * (most + 1 - frames_of_src))
    with pytest.raises(InputError) as e:
        frame_index(bad)
    assert str(bad) in str(e.value) and "zstd frames" in str(e.value)
    assert "\n" not in str(e.value)
