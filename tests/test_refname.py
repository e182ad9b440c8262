"""index.json's org.opencontainers.image.ref.name: each entry names its image in full, so other
readers of the OCI layout find the right image by name, also when two images share a tag (as
hardened-multus-cni and hardened-multus-thick do).

The readers are the real ones: skopeo (oci-archive: by ref.name, docker-archive: by RepoTag),
umoci (the extracted layout, by ref.name) and containerd (which goes by
io.containerd.image.name and must see nothing change). An "old" bundle is the same bundle with
index.json as earlier writers wrote it (ref.name the bare tag, none for a digest-only
reference): inspect and verify warn about it and still pass it.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from bundler.bundleformat.metadata import MAX_SHARED_SHOWN, shared_ref_names
from tests import imagegen as gen
from tests.bundlefiles import json_member, plain_tar, write_zst
from tests.cli_helpers import build_args, bundler, read_manifest
from tests.conftest import STEM
from tests.registryseed import push_image
from tests.servers import Registry, write_registries_yaml

TAG = "v4.3.0-build20240101"
CNI = f"docker.io/rancher/hardened-multus-cni:{TAG}"
THICK = f"docker.io/rancher/hardened-multus-thick:{TAG}"
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"


def _image(name: str, seed: int) -> gen.TestImage:
    """An OCI image (skopeo 1.9 and umoci read no other media types) whose /etc/image says
    which it is."""
    marker = gen.tar_layer([("dir", "etc"), ("file", "etc/image", name.encode())])
    return gen.image([marker, gen.tar_layer(gen.random_files(seed, 2, 4000))], oci=True)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict:
    """A bundle of two images of one tag and one pinned by digest alone, its tar, and the
    same bundle with index.json as earlier writers wrote it."""
    for tool in ("skopeo", "umoci"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; run scripts/deps, which installs it")
    tmp = tmp_path_factory.mktemp("refname")
    registry = Registry(tmp / "registry").start()
    try:
        images = {CNI: _image(CNI, 31), THICK: _image(THICK, 32)}
        for name, img in images.items():
            push_image(registry.url, name.split("/", 1)[1].split(":")[0], img, TAG)
        pinned_img = _image("pinned", 33)
        push_image(registry.url, "rancher/pinned", pinned_img)
        pinned = f"docker.io/rancher/pinned@{pinned_img.digest}"
        images[pinned] = pinned_img
        yaml = write_registries_yaml(tmp / "registries.yaml", {"docker.io": [registry.url]})
        run = bundler(*build_args(None, tmp, list(images), registries=yaml))
        assert run.code == 0, run.stderr
    finally:
        registry.stop()
    out = tmp / "dist"
    bundle = out / f"{STEM}.tar.zst"
    tar = plain_tar(bundle)
    (tmp / "bundle.tar").write_bytes(tar)
    old_tar = _with_index(tar, _as_earlier_writers)
    old = write_zst(old_tar, tmp / "old" / f"{STEM}.tar.zst")
    return {"images": images, "bundle": bundle, "tar": tmp / "bundle.tar", "old": old,
            "manifest": read_manifest(out), "tmp": tmp}


def _with_index(tar: bytes, edit) -> bytes:
    """The tar with index.json edited by `edit` (members, their order and headers kept)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar)) as src, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            body = src.extractfile(info).read() if info.isfile() else b""
            if info.name == "index.json":
                doc = json.loads(body)
                edit(doc)
                body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
                info.size = len(body)
            dst.addfile(info, io.BytesIO(body) if info.isfile() else None)
    return out.getvalue()


def _as_earlier_writers(index: dict) -> None:
    # containerd's exporter's form (ociReferenceName): the tag alone, nothing without one.
    for entry in index["manifests"]:
        annotations = entry["annotations"]
        name = annotations[IMAGE_NAME]
        annotations.pop(REF_NAME, None)
        if "@" not in name:
            annotations[REF_NAME] = name.rsplit(":", 1)[1]


def _digests(shared: dict) -> dict[str, str]:
    return {name: img.digest for name, img in shared["images"].items()}


def test_each_entry_is_named_in_full(shared):
    index = json_member(shared["tar"].read_bytes(), "index.json")
    names = [(m["annotations"][IMAGE_NAME], m["annotations"][REF_NAME], m["digest"])
             for m in index["manifests"]]
    assert sorted(names) == sorted((n, n, d) for n, d in _digests(shared).items())


def _skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, timeout=120)


@pytest.mark.parametrize("which", [CNI, THICK, "pinned"])
def test_skopeo_oci_archive_finds_each_image_by_its_full_name(shared, which):
    name = next(n for n in shared["images"] if which in n)
    raw = _skopeo("inspect", "--raw", f"oci-archive:{shared['tar']}:{name}")
    assert raw.returncode == 0, raw.stderr
    assert gen.digest(raw.stdout) == shared["images"][name].digest
    info = _skopeo("inspect", f"oci-archive:{shared['tar']}:{name}")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["Digest"] == shared["images"][name].digest


@pytest.mark.parametrize("name", [CNI, THICK])
def test_skopeo_docker_archive_finds_each_image_by_its_full_name(shared, name):
    """docker-archive: goes by manifest.json's RepoTags (unchanged): the manifest it makes up
    names our config, and our layers by their diff_ids (it serves them decompressed)."""
    raw = _skopeo("inspect", "--raw", f"docker-archive:{shared['tar']}:{name}")
    assert raw.returncode == 0, raw.stderr
    made_up = json.loads(raw.stdout)
    ours = shared["images"][name]
    assert made_up["config"]["digest"] == gen.digest(ours.config)
    assert [x["digest"] for x in made_up["layers"]] == ours.diff_ids


def test_the_bare_tag_of_an_old_bundle_misleads_skopeo_and_umoci(shared, tmp_path):
    """What the full name is for: in the old bundle the tag names two images; skopeo answers
    with one of them, exit 0, whichever was asked for, and umoci refuses the tag."""
    old_tar = tmp_path / "old.tar"
    old_tar.write_bytes(plain_tar(shared["old"]))
    info = _skopeo("inspect", f"oci-archive:{old_tar}:{TAG}")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["Digest"] in (shared["images"][CNI].digest,
                                                 shared["images"][THICK].digest)
    missing = _skopeo("inspect", f"oci-archive:{old_tar}:{CNI}")
    assert missing.returncode != 0
    run = _umoci_unpack(old_tar, TAG, tmp_path)
    assert run.returncode != 0 and "ambiguous" in run.stderr, run.stderr


def _umoci_unpack(tar: Path, name: str, tmp: Path) -> subprocess.CompletedProcess:
    """`umoci unpack` of image `name` from the layout `tar` holds, into TMP/unpacked."""
    layout = tmp / "layout"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(tar), "-C", str(layout)], check=True)
    return subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:{name}",
                           str(tmp / "unpacked")], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("which", [CNI, THICK, "pinned"])
def test_umoci_unpacks_each_image_by_its_full_name(shared, tmp_path, which):
    name = next(n for n in shared["images"] if which in n)
    run = _umoci_unpack(shared["tar"], name, tmp_path)
    assert run.returncode == 0, run.stderr
    unpacked = tmp_path / "unpacked"
    assert (unpacked / "rootfs" / "etc" / "image").read_text() == (
        name if which != "pinned" else "pinned")
    unpacked_from = (unpacked / "umoci.json").read_text()  # the descriptors it followed
    assert [n for n, img in shared["images"].items() if img.digest in unpacked_from] == [name]


def test_containerd_records_the_same_names_and_digests_as_before(shared, clean_containerd):
    """containerd reads io.containerd.image.name first: the bundle imports under the same
    names, at the same manifest digests, as the same bundle with bare-tag ref.names (CRI's
    records by config digest, `sha256:...`, included)."""
    seen = {}
    for which in ("old", "bundle"):
        clean_containerd.clear()
        run = clean_containerd.import_bundle(shared[which])
        assert run.returncode == 0, run.stderr
        seen[which] = {name: img["digest"] for name, img in clean_containerd.images().items()}
    assert seen["bundle"] == seen["old"]
    named = {n: d for n, d in seen["bundle"].items() if not n.startswith("sha256:")}
    assert named == _digests(shared)
    assert {n for n in seen["bundle"] if n.startswith("sha256:")} == {
        gen.digest(img.config) for img in shared["images"].values()}


def test_verify_and_inspect_warn_about_a_shared_ref_name(shared):
    old = shared["old"]
    run = bundler("verify", str(old))
    assert run.code == 0, run.stderr
    assert run.stdout.startswith("OK ")
    warned = [line for line in run.stderr.splitlines() if REF_NAME in line]
    assert len(warned) == 1, run.stderr
    assert warned[0].startswith("bundler: warning: "), warned
    assert CNI in warned[0] and THICK in warned[0] and f" {TAG}: " in warned[0]
    report = json.loads(bundler("verify", str(old), "--json").stdout)
    assert report["ok"] and any(CNI in n and THICK in n for n in report["warnings"])

    run = bundler("inspect", str(old))
    assert run.code == 0, run.stderr
    warned = [line for line in run.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1, run.stdout
    assert CNI in warned[0] and THICK in warned[0] and f" {TAG}: " in warned[0]
    info = json.loads(bundler("inspect", str(old), "--json").stdout)
    assert len(info["warnings"]) == 1


def test_a_bundle_of_ours_draws_no_warning(shared, tmp_path):
    run = bundler("verify", str(shared["bundle"]))
    assert run.code == 0 and REF_NAME not in run.stderr, run.stderr
    info = json.loads(bundler("inspect", str(shared["bundle"]), "--json").stdout)
    assert info["warnings"] == []


def _entry(name: object, ref_name: object) -> dict:
    return {"annotations": {IMAGE_NAME: name, REF_NAME: ref_name}}


def test_the_warning_shows_untrusted_text_printable():
    names = ["docker.io/a/x:1\x1b[2J", "docker.io/a/y:1"]
    (warning,) = shared_ref_names([_entry(names[0], "1\x1b]0;owned\x07"),
                                   _entry(names[1], "1\x1b]0;owned\x07"), {}, "junk"])
    assert warning.isprintable() and warning.isascii(), warning
    assert "manifests[0] ('docker.io/a/x:1\\x1b[2J')" in warning
    assert "manifests[1] (docker.io/a/y:1)" in warning
    assert "'1\\x1b]0;owned\\x07'" in warning


def test_the_warnings_are_bounded():
    many = [_entry(f"docker.io/a/x{i}:v", "v") for i in range(5000)]
    assert shared_ref_names(many) == [
        "index.json: manifests[0] (docker.io/a/x0:v) and manifests[1] (docker.io/a/x1:v) and "
        f"4998 more share {REF_NAME} v: skopeo or umoci asked for that name takes one of them "
        f"or refuses it (containerd goes by {IMAGE_NAME})"]
    pairs = [_entry(f"docker.io/a/x{i}:v", f"v{i // 2}") for i in range(1000)]
    warnings = shared_ref_names(pairs)
    assert len(warnings) == MAX_SHARED_SHOWN + 1
    assert warnings[-1] == f"index.json: and {500 - MAX_SHARED_SHOWN} more {REF_NAME} values " \
        "shared by several images"
    long = "docker.io/rancher/" + "a" * 200 + ":v"
    assert long in shared_ref_names([_entry(long, "v"), _entry(long + "2", "v")])[0]


def test_two_or_three_holders_and_exactly_the_shown_number_of_values():
    two = shared_ref_names([_entry("docker.io/a/x:v", "v"), _entry("docker.io/a/y:v", "v")])
    assert two == [
        "index.json: manifests[0] (docker.io/a/x:v) and manifests[1] (docker.io/a/y:v) share "
        f"{REF_NAME} v: skopeo or umoci asked for that name takes one of them or refuses it "
        f"(containerd goes by {IMAGE_NAME})"]
    three = shared_ref_names([_entry(f"docker.io/a/x{i}:v", "v") for i in range(3)])
    assert "manifests[1] (docker.io/a/x1:v) and 1 more share" in three[0]
    # As many shared values as are shown: each is said, and no "and 0 more" line after them.
    pairs = [_entry(f"docker.io/a/x{i}:v", f"v{i // 2}") for i in range(2 * MAX_SHARED_SHOWN)]
    warnings = shared_ref_names(pairs)
    assert len(warnings) == MAX_SHARED_SHOWN and all(" share " in w for w in warnings)
    # One value more: the last line counts what is not shown.
    pairs += [_entry("docker.io/a/y0:w", "w"), _entry("docker.io/a/y1:w", "w")]
    assert shared_ref_names(pairs)[-1].startswith("index.json: and 1 more ")
