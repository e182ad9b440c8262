"""Bundles whose tar Go's archive/tar (containerd, K3s) could read differently from verify:
each is refused by `bundler verify` with a line naming the tar byte offset, or,
were it accepted, the real containerd would have to import exactly what verify reported."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bundler.bundleformat import archive
from bundler.tarstream import TarStream
from tests import imagegen as gen
from tests.bundlefiles import json_member, members, plain_tar, read_member, write_zst
from tests.cli_helpers import build_args, bundler
from tests.conftest import BUNDLE, REFS
from tests.registryseed import push_image
from tests.servers import Containerd
from tests.tarcraft import BLOCK, member, octal, pax, put, record

MULTILIST = "docker.io/rancher/multilist:v1"
BUSYBOX = "docker.io/library/busybox:1.36.1"


def _offsets(tar: bytes) -> dict[str, int]:
    """Member name -> offset of its header, as tarfile reads the honest tar."""
    return {m.name: m.offset for m in members(tar)}


def _index_as_verify_reads_it(tar: bytes) -> dict[str, str]:
    """Image name -> manifest digest, from the index.json TarStream (verify's reader) finds."""
    stream = TarStream(io.BytesIO(tar))
    for m in stream:
        if m.name == archive.INDEX:
            doc = json.loads(b"".join(iter(stream.read_data, b"")))
            return {e["annotations"][archive.ANNOTATION_IMAGE_NAME]: e["digest"]
                    for e in doc["manifests"]}
    raise AssertionError("no index.json")


def _refused_or_imported_alike(tar: bytes, path: Path, offset: int,
                               containerd: Containerd) -> None:
    bundle = write_zst(tar, path)
    run = subprocess.run([sys.executable, "-m", "bundler", "verify", str(bundle)],
                         capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert "Traceback" not in run.stderr, run.stderr
    if run.returncode == 0:
        # verify approved it: containerd must import exactly the images verify checked.
        reported = _index_as_verify_reads_it(tar)
        imported = containerd.import_bundle(bundle)
        assert imported.returncode == 0, imported.stderr
        # The CRI plugin also lists each image by its ID ("sha256:" + config digest).
        got = {name: image["digest"] for name, image in containerd.images().items()
               if not name.startswith("sha256:")}
        assert got == reported
        return
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    problems = [line for line in run.stdout.splitlines() if not line.startswith("FAILED ")]
    tar_lines = [line for line in problems if ": tar: " in line]
    assert len(tar_lines) == 1, run.stdout
    assert f"byte {offset}" in tar_lines[0], (offset, tar_lines[0])


def _header_at(tar: bytes, offset: int) -> bytes:
    return tar[offset:offset + BLOCK]


def _splice(tar: bytes, offset: int, new: bytes, old_len: int = BLOCK) -> bytes:
    return tar[:offset] + new + tar[offset + old_len:]


@pytest.fixture(scope="module")
def honest(builds) -> bytes:
    return plain_tar(builds["p1"] / BUNDLE)


def _first_blob(tar: bytes) -> tuple[str, int]:
    name, offset = next((n, o) for n, o in _offsets(tar).items()
                        if n.startswith(archive.BLOB_DIR))
    return name, offset


def test_typeflag_7_member(honest, tmp_path, clean_containerd):
    name, offset = _first_blob(honest)
    tar = _splice(honest, offset, put(_header_at(honest, offset), "typeflag", b"7"))
    _refused_or_imported_alike(tar, tmp_path / "t7" / BUNDLE, offset, clean_containerd)


def test_size_3_36(honest, tmp_path, clean_containerd):
    offset = _offsets(honest)[archive.OCI_LAYOUT]
    h = _header_at(honest, offset)
    digits = h[124:136].rstrip(b"\0").lstrip(b"0")  # the size in octal, e.g. b"36"
    assert len(digits) >= 2
    # Python's int(..., 8) reads "3_6" as 0o36; Go's ParseUint refuses the header.
    tar = _splice(honest, offset, put(h, "size", digits[:1] + b"_" + digits[1:]))
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        assert t.getmember(archive.OCI_LAYOUT).size == int(digits, 8)  # tarfile takes it
    _refused_or_imported_alike(tar, tmp_path / "s" / BUNDLE, offset, clean_containerd)


def test_blob_name_with_a_trailing_newline(honest, tmp_path, clean_containerd):
    # A second copy of a blob whose name ends in "\n": a `$` regex still sees a blob name,
    # and the duplicate goes unnoticed.
    name, offset = _first_blob(honest)
    data = read_member(honest, name)
    copy = member(name + "\n", data)
    after = offset + BLOCK + len(data) + (-len(data) % BLOCK)
    tar = honest[:after] + copy + honest[after:]
    _refused_or_imported_alike(tar, tmp_path / "nl" / BUNDLE, after, clean_containerd)


def test_gnu_magic_with_a_prefix(honest, tmp_path, clean_containerd):
    # GNU headers have no prefix field in Go: it would name the blob by its hex alone.
    name, offset = _first_blob(honest)
    h = put(_header_at(honest, offset), "name", name.rsplit("/", 1)[1].encode())
    h = put(put(put(h, "prefix", b"blobs/sha256"), "magic", b"ustar "), "version", b" \0")
    tar = _splice(honest, offset, h)
    _refused_or_imported_alike(tar, tmp_path / "gnu" / BUNDLE, offset, clean_containerd)


def test_prefix_of_nul_then_text(honest, tmp_path, clean_containerd):
    # Go reads the prefix up to its first NUL (here: nothing), the old reader took the text.
    name, offset = _first_blob(honest)
    h = put(_header_at(honest, offset), "name", name.rsplit("/", 1)[1].encode())
    tar = _splice(honest, offset, put(h, "prefix", b"\0blobs/sha256"))
    _refused_or_imported_alike(tar, tmp_path / "nul" / BUNDLE, offset, clean_containerd)


# -- two pax headers in a row: a second index.json hidden from verify -------------------------

def _evil_index(honest: bytes) -> bytes:
    """The honest index.json with the multilist name pointing at busybox's manifest."""
    doc = json_member(honest, archive.INDEX)
    entries = {e["annotations"][archive.ANNOTATION_IMAGE_NAME]: e for e in doc["manifests"]}
    victim, other = entries[MULTILIST], entries[BUSYBOX]
    for key in ("digest", "size", "mediaType"):
        victim[key] = other[key]
    return archive.dumps(doc)


def test_two_pax_headers_hiding_a_second_index_json(fixture_registry, honest, tmp_path,
                                                    clean_containerd):
    """The issue's worst case. A layer blob holds, at a block boundary, a tar member named
    index.json. Two pax headers precede the blob's header: the first says the blob's true
    size (tarfile and the old reader keep it), the second only its path (Go keeps only this
    one, so it takes the header's size field: one block). containerd therefore reads the
    hidden index.json as a member and, being later, it wins over the real one."""
    evil = _evil_index(honest)
    layer = bytes(BLOCK) + member(archive.INDEX, evil)
    hidden = gen.image([layer], compression=["none"])
    push_image(fixture_registry.registry.url, "rancher/hidden", hidden, "v1")
    work = tmp_path / "build"
    work.mkdir()
    run = bundler(*build_args(fixture_registry, work, [*REFS, "rancher/hidden:v1"],
                              "--layers", "preserve"))
    assert run.code == 0, run.stderr
    tar = plain_tar(work / "dist" / BUNDLE)

    name = archive.blob_path(gen.digest(layer))
    offset = _offsets(tar)[name]
    h = put(_header_at(tar, offset), "size", octal(BLOCK, 12))
    first = pax(record("size", str(len(layer))))
    second = pax(record("path", name))
    crafted = _splice(tar, offset, first + second + h)
    second_at = offset + len(first)

    # What the old reader and tarfile saw: the real index, the blob whole.
    with tarfile.open(fileobj=io.BytesIO(crafted)) as t:
        assert t.getmember(name).size == len(layer)
        real = json.loads(t.extractfile(archive.INDEX).read())
    real_names = {e["annotations"][archive.ANNOTATION_IMAGE_NAME]: e["digest"]
                  for e in real["manifests"]}
    # What containerd imports from the same file: multilist is busybox now.
    bundle = write_zst(crafted, tmp_path / "pax" / BUNDLE)
    imported = clean_containerd.import_bundle(bundle)
    assert imported.returncode == 0, imported.stderr
    images = clean_containerd.images()
    assert images[MULTILIST]["digest"] == real_names[BUSYBOX] != real_names[MULTILIST]
    clean_containerd.clear()

    _refused_or_imported_alike(crafted, tmp_path / "pax2" / BUNDLE, second_at,
                               clean_containerd)


# -- what verify accepts, containerd imports alike ------------------------------------------

def test_honest_bundle_is_accepted_and_imported_as_verify_reported(honest, tmp_path,
                                                                    clean_containerd):
    _refused_or_imported_alike(honest, tmp_path / "honest" / BUNDLE, -1, clean_containerd)
    assert clean_containerd.images()  # the accepted branch ran


def test_headers_in_other_plain_forms_are_imported_as_verify_reported(honest, tmp_path,
                                                                      clean_containerd):
    """Forms other writers use and Go reads as we do: every blob named through the ustar
    prefix field, numbers padded with blanks, an old-style checksum field."""
    tar = honest
    for name, offset in _offsets(honest).items():
        if not name.startswith(archive.BLOB_DIR):
            continue
        h = put(_header_at(tar, offset), "name", name.rsplit("/", 1)[1].encode())
        h = put(put(h, "prefix", archive.BLOB_DIR.rstrip("/").encode()), "mode", b"   644 \0")
        h = put(h, "chksum", b" " + h[148:154] + b"\0")
        tar = _splice(tar, offset, h)
    assert tar != honest
    _refused_or_imported_alike(tar, tmp_path / "forms" / BUNDLE, -1, clean_containerd)
    assert clean_containerd.images()
