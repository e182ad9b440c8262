"""archive: the bundle tar as segments, read back by Python's tarfile and by a model of Go's
archive/tar (containerd's reader), and SegmentCheck against those very bytes."""

from __future__ import annotations

import io
import json
import random
import tarfile

import pytest

from bundler import mediatypes
from bundler.bundleformat import archive
from bundler.errors import DigestMismatch
from bundler.image import Image
from tests import bundlefiles
from tests import imagegen as gen
from tests.tarcraft import go_read

SHARED = gen.tar_layer(gen.random_files(1, 2, 3000))


def _images() -> list[Image]:
    """A Docker image and an OCI one sharing a gzip layer (the OCI one has a plain layer too),
    and a digest-pinned one with no tag."""
    docker = gen.image([SHARED, gen.tar_layer(gen.random_files(2, 1, 700))])
    oci = gen.image([SHARED, gen.tar_layer(gen.random_files(4, 1, 500))], oci=True,
                    compression=["gzip", "none"])
    pinned = gen.image([gen.tar_layer(gen.random_files(3, 1, 100))], oci=True)
    return [gen.model(docker, "rancher/multus:v1"), gen.model(oci, "busybox:1.36.1"),
            gen.model(pinned, f"docker.io/rancher/pinned@{pinned.digest}")]


def _blobs(images: list[Image]) -> dict[str, bytes]:
    """digest -> bytes of every blob the images refer to."""
    out = {}
    for image in images:
        for data in (image.manifest, image.config):
            out[gen.digest(data)] = data
        for layer in image.layers:
            out[layer.descriptor.digest] = layer.open().read()
    return out


def test_members_in_order_with_fixed_metadata():
    images = _images()
    tar = bundlefiles.joined(archive.segments(images))
    members = bundlefiles.members(tar)
    names = [m.name for m in members]
    blobs = _blobs(images)
    layers = sorted({layer.descriptor.digest for i in images for layer in i.layers})
    others = sorted(set(blobs) - set(layers))
    assert names == [*archive.METADATA, "blobs", archive.BLOB_DIR.rstrip("/"),
                     *(archive.blob_path(d) for d in layers + others)]
    shared = images[0].layers[0].descriptor.digest
    assert shared == images[1].layers[0].descriptor.digest
    assert names.count(archive.blob_path(shared)) == 1
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() else 0o644), m.name
    files = dict(bundlefiles.files(tar))
    for digest, data in blobs.items():
        assert files[archive.blob_path(digest)] == data
    # Like tar and tarfile: two zero blocks, then whole 10 KiB records.
    assert len(tar) % (20 * tarfile.BLOCKSIZE) == 0
    assert tar.endswith(bytes(2 * tarfile.BLOCKSIZE))


def test_go_reads_what_tarfile_reads():
    tar = bundlefiles.joined(archive.segments(_images()))
    go = [(name.decode(), data) for name, flag, _, data in go_read(tar) if flag == b"0"]
    assert go == bundlefiles.files(tar)


def test_same_images_same_bytes():
    first, again = archive.segments(_images()), archive.segments(_images())
    assert bundlefiles.joined(first) == bundlefiles.joined(again)
    assert [s.key for s in archive.segments(_images())] == \
        [s.key for s in archive.segments(_images())]


def test_index_and_docker_manifest_name_every_image():
    images = _images()
    tar = bundlefiles.joined(archive.segments(images))
    index = bundlefiles.json_member(tar, archive.INDEX)
    assert index["mediaType"] == mediatypes.OCI_INDEX
    for entry, image in zip(index["manifests"], images, strict=True):
        assert entry["annotations"] == {archive.ANNOTATION_IMAGE_NAME: image.reference.image_name,
                                        archive.ANNOTATION_REF_NAME: image.reference.image_name}
        assert (entry["digest"], entry["size"], entry["mediaType"]) == (
            image.manifest_digest, len(image.manifest), image.manifest_media_type)
        assert entry["platform"] == image.platform.as_json()
    docker = bundlefiles.json_member(tar, archive.DOCKER_MANIFEST)
    assert [d["RepoTags"] for d in docker] == [["docker.io/rancher/multus:v1"],
                                              ["docker.io/library/busybox:1.36.1"], []]
    for entry, image in zip(docker, images, strict=True):
        assert entry["Config"] == archive.blob_path(image.config_descriptor.digest)
        assert entry["Layers"] == [archive.blob_path(x.descriptor.digest) for x in image.layers]
    repos = bundlefiles.json_member(tar, archive.REPOSITORIES)
    assert repos == {"docker.io/rancher/multus": {"v1": images[0].config_descriptor.digest[7:]},
                     "docker.io/library/busybox": {
                         "1.36.1": images[1].config_descriptor.digest[7:]}}
    # Compact and sorted, so the same images always give the same bytes.
    raw = bundlefiles.read_member(tar, archive.INDEX)
    assert raw == json.dumps(json.loads(raw), separators=(",", ":"), sort_keys=True).encode()


def test_segments_say_their_sizes_and_compressibility():
    images = _images()
    for s in archive.segments(images):
        assert s.size == sum(len(c) for c in s.chunks()), s.key
        if s.digest is not None:
            media = {x.descriptor.digest: x.descriptor.media_type
                     for i in images for x in i.layers}.get(s.digest)
            assert s.compressible == (media is None
                                      or not mediatypes.is_compressed_layer(media)), s.key


@pytest.mark.parametrize(("served", "said"), [(b"12345", "ended 1 bytes early"),
                                              (b"1234567", "longer than its 6 bytes")])
def test_blob_of_another_length_than_its_descriptor_is_refused(served, said):
    seg = archive.blob_segment(gen.digest(b"123456"), 6, lambda: io.BytesIO(served), True)
    with pytest.raises(DigestMismatch) as e:
        b"".join(seg.chunks())
    assert said in str(e.value) and archive.blob_path(gen.digest(b"123456")) in str(e.value)


def test_segment_check_takes_the_exact_bytes_in_any_pieces():
    segments = archive.segments(_images())
    tar = bundlefiles.joined(archive.segments(_images()))
    rng = random.Random(5)
    for _ in range(5):
        check = archive.SegmentCheck(segments)
        at = 0
        while at < len(tar):
            n = rng.randrange(1, 20_000)
            assert check.feed(tar[at:at + n]), at
            at += n
        assert check.complete()


def test_segment_check_refuses_any_other_bytes():
    segments = archive.segments(_images())
    tar = bundlefiles.joined(archive.segments(_images()))
    rng = random.Random(6)
    for at in [0, len(tar) - 1, *rng.sample(range(len(tar)), 30)]:
        damaged = bytearray(tar)
        damaged[at] ^= 1 << rng.randrange(8)
        check = archive.SegmentCheck(segments)
        assert not (check.feed(bytes(damaged)) and check.complete()), at
    short = archive.SegmentCheck(segments)
    assert short.feed(tar[:-1]) and not short.complete()
    longer = archive.SegmentCheck(segments)
    assert not longer.feed(tar + b"\0")


def test_segment_check_of_an_empty_blob():
    empty = archive.blob_segment(gen.digest(b""), 0, lambda: io.BytesIO(b""), True)
    check = archive.SegmentCheck([empty])
    assert check.feed(b"".join(empty.chunks())) and check.complete()
    other = archive.blob_segment(gen.digest(b"x"), 0, lambda: io.BytesIO(b""), True)
    assert not archive.SegmentCheck([other]).complete()  # no bytes hash to that digest
