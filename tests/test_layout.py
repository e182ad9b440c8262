"""layout.Layout: what a bundle's stream held, checked as an image layout. Each check gets a
layout that is right but for one twist, and must say exactly what is wrong, naming the entry,
member or image (verify's own tests run the same checks on whole bundles)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from bundler.checks.layout import Blob, Layout
from bundler.platform import Platform
from tests import imagegen as gen

NAME = "docker.io/rancher/x:1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 2
        t.addfile(info, io.BytesIO(b"x\n"))
    return buf.getvalue()


LAYER = _tar()


class Parts:
    """One image's layout, as verify's stream would have found it; tests twist a part, then
    `build()` gives Layout's inputs (the documents re-serialized, digests recomputed)."""

    def __init__(self):
        self.config = {"os": "linux", "architecture": "amd64",
                       "rootfs": {"type": "layers", "diff_ids": [gen.digest(LAYER)]}}
        self.layer_desc = {"mediaType": OCI_LAYER, "digest": gen.digest(LAYER), "size": len(LAYER)}
        self.manifest: dict = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        self.entry: dict = {"mediaType": OCI_MANIFEST,
                            "annotations": {"io.containerd.image.name": NAME}}
        self.entries: list | None = None  # index.json's manifests, when not [entry]
        self.layer = Blob(len(LAYER), gen.digest(LAYER), None, "plain", LAYER[:512])
        self.oci_layout = b'{"imageLayoutVersion":"1.0.0"}'
        self.docker: list | None = None  # manifest.json, when not the right one
        self.repositories: dict | None = None
        self.extra_blobs: dict[str, Blob] = {}
        self.drop: set[str] = set()  # metadata members or blob digests left out

    def build(self) -> tuple[dict[str, bytes], dict[str, Blob]]:
        config = json.dumps(self.config).encode()
        manifest = json.dumps({"config": {"mediaType": "", "digest": gen.digest(config),
                                          "size": len(config)},
                               "layers": [self.layer_desc], **self.manifest}).encode()
        entry = {"digest": gen.digest(manifest), "size": len(manifest), **self.entry}
        entries = [entry] if self.entries is None else self.entries
        docker = [{"Config": f"blobs/sha256/{gen.digest(config)[7:]}", "RepoTags": [NAME],
                   "Layers": [f"blobs/sha256/{gen.digest(LAYER)[7:]}"]}]
        repos = {NAME.rsplit(":", 1)[0]: {"1": gen.digest(config)[7:]}}
        metadata = {
            "oci-layout": self.oci_layout,
            "index.json": json.dumps({"schemaVersion": 2, "manifests": entries}).encode(),
            "manifest.json": json.dumps(docker if self.docker is None else self.docker).encode(),
            "repositories": json.dumps(repos if self.repositories is None
                                       else self.repositories).encode()}
        blobs = {gen.digest(config): Blob(len(config), gen.digest(config), config),
                 gen.digest(manifest): Blob(len(manifest), gen.digest(manifest), manifest),
                 gen.digest(LAYER): self.layer, **self.extra_blobs}
        return ({k: v for k, v in metadata.items() if k not in self.drop},
                {k: v for k, v in blobs.items() if k not in self.drop})


def _check(parts: Parts, want: Platform | None = None) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    metadata, blobs = parts.build()
    names = Layout(metadata, blobs, problems.append).check(want)
    return names, problems


def test_a_right_layout_is_no_problem():
    assert _check(Parts()) == ([NAME], [])
    assert _check(Parts(), Platform("linux", "amd64")) == ([NAME], [])


def test_metadata_members_missing_or_wrong():
    parts = Parts()
    parts.drop = {"repositories", "oci-layout"}
    assert _check(parts) == ([], ["oci-layout: missing", "repositories: missing"])
    parts = Parts()
    parts.oci_layout = b'{"imageLayoutVersion":"1.1.0"}'
    assert _check(parts)[1] == ["oci-layout: not an OCI layout 1.0.0 marker"]
    parts.oci_layout = b"{not json"
    problems = _check(parts)[1]
    assert problems[0].startswith("oci-layout: bad JSON (") and problems[1:] == [
        "oci-layout: not an OCI layout 1.0.0 marker"]


@pytest.mark.parametrize("entries", [[], None, "x", [5]])
def test_an_index_that_lists_no_manifests(entries):
    """(or entries that are not objects: Go cannot decode them, and strictjson says so)"""
    parts = Parts()
    parts.entries = entries
    if entries is None:
        parts.entries = []
    names, problems = _check(parts)
    assert names == [] and problems[-1] == "index.json: lists no manifests"


def test_a_blob_no_image_names_is_a_problem():
    parts = Parts()
    parts.extra_blobs = {"sha256:" + "e" * 64: Blob(3, "sha256:" + "e" * 64, b"{}")}
    assert _check(parts)[1] == [f"blobs/sha256/{'e' * 64}: not referenced by any image"]


@pytest.mark.parametrize(("twist", "problem"), [
    (lambda p: p.entry.update(annotations=None),
     "index.json: manifests[0]: annotations is not an object"),
    (lambda p: p.entry.update(annotations={}), "index.json: manifests[0]: "
     "io.containerd.image.name None: missing or not a string"),
    (lambda p: p.entry.update(annotations={"io.containerd.image.name": "rancher/x:1"}),
     "index.json: manifests[0]: io.containerd.image.name rancher/x:1: not a full name "
     f"(want {NAME})"),
    (lambda p: p.entry.update(mediaType=OCI_INDEX), f"index.json: manifests[0]: mediaType "
     f"{OCI_INDEX} is not an image manifest's (containerd refuses the import)"),
])
def test_index_entries_that_name_no_image(twist, problem):
    parts = Parts()
    twist(parts)
    names, problems = _check(parts)
    assert problem in problems, problems
    assert names == []


def test_an_entry_descriptor_that_is_not_one():
    parts = Parts()
    parts.entry.update(size=-1)
    names, problems = _check(parts)
    assert names == [] and problems[0] == (
        "index.json: manifests[0]: descriptor size -1 is not a byte count")
    assert len(problems) == 4, problems  # and the three blobs nothing else names


def test_the_entrys_platform_against_the_config():
    parts = Parts()
    parts.entry["platform"] = "linux/amd64"  # Go cannot decode it: strictjson says so first
    assert _check(parts)[1] == ["index.json: bad JSON (manifests[0].platform is not an object)",
                                "index.json: lists no manifests"]
    parts.entry["platform"] = {"os": "linux", "architecture": "arm64"}
    assert _check(parts)[1] == [
        "index.json: manifests[0]: platform linux/arm64 but the config says linux/amd64"]
    parts.entry["platform"] = {"os": "linux", "architecture": "amd64"}
    assert _check(parts)[1] == []


def test_a_declared_platform_with_control_characters_is_shown_escaped():
    """index.json is untrusted: its platform strings must not move the cursor or start a line
    that reads 'OK' on the terminal."""
    parts = Parts()
    parts.entry["platform"] = {"os": "linux\x1b[2J", "architecture": "amd64\nOK fake",
                               "variant": "\x7f"}
    problems = _check(parts)[1]
    assert problems == ["index.json: manifests[0]: platform 'linux\\x1b[2J/amd64\\nOK fake/"
                        "\\x7f' but the config says linux/amd64"]
    assert not any(ord(c) < 0x20 or ord(c) == 0x7f for c in problems[0])


def test_the_config_against_the_platform_wanted():
    names, problems = _check(Parts(), Platform("linux", "arm64", "v8"))
    assert problems == [f"{NAME}: config says linux/amd64, the bundle is linux/arm64/v8"]
    assert names == [NAME]


def test_a_manifest_that_is_not_an_image_manifest():
    parts = Parts()
    parts.manifest["mediaType"] = OCI_INDEX
    assert _check(parts)[1][0] == (
        f"index.json: manifests[0] ({NAME}): manifest says mediaType {OCI_INDEX}, "
        f"index.json says {OCI_MANIFEST}")
    parts = Parts()
    parts.manifest["manifests"] = []
    assert _check(parts)[1][0] == (
        f"index.json: manifests[0] ({NAME}): manifest has an index's or schema 1's fields")


def test_documents_missing_of_another_size_or_too_large():
    parts = Parts()
    metadata, blobs = parts.build()
    manifest_digest = json.loads(metadata["index.json"])["manifests"][0]["digest"]
    config_digest = json.loads(blobs[manifest_digest].data)["config"]["digest"]
    where = f"index.json: manifests[0] ({NAME})"
    for change, problem in (
            (lambda b: b.pop(manifest_digest),
             f"{where}: manifest: blobs/sha256/{manifest_digest[7:]} is missing"),
            (lambda b: setattr(b[config_digest], "size", 1),
             f"{where}: config: blobs/sha256/{config_digest[7:]} is 1 bytes, descriptor says"),
            (lambda b: setattr(b[config_digest], "data", None),
             f"{where}: config: blobs/sha256/{config_digest[7:]} is too large for a document"),
            (lambda b: setattr(b[manifest_digest], "data", b'{"schemaVersion": "2"}'),
             f"{where}: manifest")):
        metadata, blobs = parts.build()
        change(blobs)
        problems: list[str] = []
        Layout(metadata, blobs, problems.append).check(None)
        assert any(p.startswith(problem) for p in problems), (problem, problems)


def test_a_config_that_does_not_parse():
    parts = Parts()
    parts.config["rootfs"]["diff_ids"] = []  # one layer in the manifest, none in the config
    problems = _check(parts)[1]
    assert problems and problems[0].startswith(f"index.json: manifests[0] ({NAME}): config")


@pytest.mark.parametrize(("twist", "problem"), [
    (lambda p: setattr(p.layer, "size", 3), f"3 bytes, manifest says {len(LAYER)}"),
    (lambda p: setattr(p.layer, "content_digest", "sha256:" + "0" * 64),
     f"diff_id mismatch: config says {gen.digest(LAYER)}, uncompressed layer is sha256:{'0' * 64}"),
    (lambda p: p.layer_desc.update(mediaType="application/x-mystery"),
     "mediaType application/x-mystery is not a layer type containerd unpacks"),
    (lambda p: setattr(p.layer, "compression", "gzip"),
     f"mediaType {OCI_LAYER} but the blob is gzip"),
    (lambda p: setattr(p.layer, "tar_head", b"not a tar" * 60), "not a tar archive"),
])
def test_layers(twist, problem):
    parts = Parts()
    twist(parts)
    where = f"index.json: manifests[0] ({NAME}): layer 0 (blobs/sha256/{gen.digest(LAYER)[7:]})"
    assert _check(parts)[1] == [f"{where}: {problem}"]


def test_a_missing_layer():
    parts = Parts()
    parts.drop = {gen.digest(LAYER)}
    where = f"index.json: manifests[0] ({NAME}): layer 0 (blobs/sha256/{gen.digest(LAYER)[7:]})"
    names, problems = _check(parts)
    assert problems[0] == f"{where}: missing"


def test_the_docker_views_against_what_archive_writes():
    parts = Parts()
    parts.docker = []
    assert _check(parts)[1] == ["manifest.json: does not list the 1 images of index.json"]
    parts = Parts()
    metadata, _ = parts.build()
    entry = json.loads(metadata["manifest.json"])[0]
    parts.docker = [{**entry, "RepoTags": ["docker.io/rancher/y:1"]}]
    assert _check(parts)[1] == [f"manifest.json: entry 0 disagrees with index.json ({NAME})"]
    parts = Parts()
    parts.repositories = {"docker.io/rancher/x": {"2": "0" * 64}}
    assert _check(parts)[1] == ["repositories: disagrees with index.json"]


def test_one_manifest_named_twice_is_checked_once():
    parts = Parts()
    metadata, _ = parts.build()
    entry = json.loads(metadata["index.json"])["manifests"][0]
    parts.entries = [entry, entry]
    names, problems = _check(parts)
    assert problems[0] == f"index.json: manifests[1]: {NAME} is named by an earlier entry too"
    parts.layer.size = 3  # a layer problem: said once, not once per entry
    other = {**entry, "annotations": {"io.containerd.image.name": "docker.io/rancher/x:2"}}
    parts.entries = [entry, other]
    problems = _check(parts)[1]
    assert sum("3 bytes, manifest says" in p for p in problems) == 1, problems


def test_index_digests_and_layers_of():
    parts = Parts()
    metadata, blobs = parts.build()
    layout = Layout(metadata, blobs, [].append)
    layout.check(None)
    digest = json.loads(metadata["index.json"])["manifests"][0]["digest"]
    assert layout.index_digests() == {NAME: digest}
    config = json.loads(blobs[digest].data)["config"]["digest"]
    assert layout.layers_of(digest) == (config, [{"digest": gen.digest(LAYER), "size": len(LAYER)}])
    assert layout.layers_of("sha256:" + "0" * 64) is None


def _two_images(second_arch: str, first_broken: bool = False
                ) -> tuple[dict[str, bytes], dict[str, Blob]]:
    """Two images in one layout (the second named y, of `second_arch`), or three, the first
    of them broken, when `first_broken`."""
    parts = []
    for i, arch in enumerate(["amd64", second_arch]):
        p = Parts()
        p.config["architecture"] = arch
        if i:
            p.config["author"] = "y"  # another config digest
            p.entry["annotations"] = {"io.containerd.image.name": "docker.io/rancher/y:1"}
        parts.append(p.build())
    index = [json.loads(m["index.json"])["manifests"][0] for m, _ in parts]
    if first_broken:
        index.insert(0, {"mediaType": OCI_MANIFEST, "digest": gen.digest(b"gone"), "size": 4})
    metadata = {**parts[0][0], "index.json": json.dumps(
        {"schemaVersion": 2, "manifests": index}).encode()}
    return metadata, {**parts[0][1], **parts[1][1]}


@pytest.mark.parametrize("first_broken", [False, True])
def test_without_a_platform_wanted_the_first_image_sets_it_for_the_rest(first_broken):
    problems: list[str] = []
    Layout(*_two_images("arm64", first_broken), problems.append).check(None)
    assert "docker.io/rancher/y:1: config says linux/arm64, the bundle is linux/amd64" \
        in problems, problems
    problems = []
    Layout(*_two_images("amd64", first_broken), problems.append).check(None)
    assert not [p for p in problems if "config says" in p], problems


def test_a_layer_may_start_empty_or_with_the_end_of_archive_block():
    # An empty layer (docker's for a metadata-only step) is two zero blocks, or nothing.
    from bundler.checks.layout import _is_tar_start

    for head in (b"", bytes(512), bytes(100)):
        assert _is_tar_start(head), len(head)
    assert _is_tar_start(LAYER[:512])
    assert not _is_tar_start(LAYER[:511]) and not _is_tar_start(b"\0" * 511 + b"x")


def _header(high: bytes = b"", mtime_end: bytes = b"\0") -> bytearray:
    """A ustar header (etc/hostname) with `high` bytes in its user name and byte 147, the last
    of the mtime field, set to `mtime_end`; its checksum field still to be written."""
    h = bytearray(tarfile.TarInfo("etc/hostname").tobuf(format=tarfile.USTAR_FORMAT))
    h[265:265 + len(high)] = high
    h[147:148] = mtime_end
    return h


def _sums(h: bytearray) -> tuple[int, int]:
    rest = bytes(h[:148]) + b" " * 8 + bytes(h[156:])
    unsigned = sum(rest)
    return unsigned, unsigned - 256 * sum(1 for c in rest if c >= 128)


def _with_sum(h: bytearray, field: bytes) -> bytes:
    assert len(field) == 8
    return bytes(h[:148]) + field + bytes(h[156:])


def test_a_layers_first_header_is_checked_as_go_checks_its_sum():
    from bundler.checks.layout import _is_tar_start

    plain = _header()
    unsigned, signed = _sums(plain)
    assert unsigned == signed and unsigned < 0o100000
    # Every form Go's parseOctal reads: padded with NULs or spaces, either side, or all digits.
    for field in (b"%06o\0 " % unsigned, b"%07o\0" % unsigned, b"%08o" % unsigned,
                  b"%o\0  " % unsigned, b" %o\0 " % unsigned, b"%o" % unsigned + b" " * 3):
        assert _is_tar_start(_with_sum(plain, field)), field
    for wrong in (unsigned + 1, unsigned - 1, unsigned + 256, unsigned - 256):
        assert not _is_tar_start(_with_sum(plain, b"%06o\0 " % wrong)), wrong
    for bad in (b"%05o8\0 " % (unsigned // 8), b"%05o9\0 " % (unsigned // 8), b"0/1234\0 ",
                b"01x234\0 ", b"\0" * 8, b" " * 8):
        assert not _is_tar_start(_with_sum(plain, bad)), bad
    # A trailing space in mtime's field counts in the sum like any byte.
    spaced = _header(mtime_end=b" ")
    assert _is_tar_start(_with_sum(spaced, b"%06o\0 " % _sums(spaced)[0]))
    assert not _is_tar_start(_with_sum(spaced, b"%06o\0 " % unsigned))


@pytest.mark.parametrize("high", [b"\x80", b"\xff", b"\xe9" * 8, b"\x80\xff\x7f"])
def test_a_header_with_high_bytes_may_carry_the_signed_or_the_unsigned_sum(high):
    # Old tar implementations summed signed chars; Go accepts either sum.
    from bundler.checks.layout import _is_tar_start

    h = _header(high)
    unsigned, signed = _sums(h)
    assert signed < unsigned
    for good in (unsigned, signed):
        assert _is_tar_start(_with_sum(h, b"%06o\0 " % good)), good
    for wrong in (signed - 256, signed + 256 if signed + 256 != unsigned else signed - 1,
                  unsigned + 256, signed + 1):
        assert not _is_tar_start(_with_sum(h, b"%06o\0 " % wrong)), wrong


def test_a_0x7f_byte_is_not_high():
    from bundler.checks.layout import _is_tar_start

    h = _header(b"\x7f")
    unsigned, signed = _sums(h)
    assert unsigned == signed
    assert not _is_tar_start(_with_sum(h, b"%06o\0 " % (unsigned - 256)))
