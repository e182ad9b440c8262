"""The bundle sink on its own: any source's images in, through the stage, one architecture's
files out, named only when the caller commits; and sources.from_options, which opens the
source a build reads."""

from __future__ import annotations

import dataclasses
import io
import subprocess
from pathlib import Path

import pytest

from bundler import mutate, platform, reference, sources
from bundler.atomic import AtomicOutputs
from bundler.cache import BlobStore
from bundler.errors import DigestMismatch, InputError
from bundler.sinks import Sink
from bundler.sinks.bundle import BundleSink
from bundler.sources import Source
from bundler.sources.bundle import BundleSource
from bundler.stage import Stage
from tests.conftest import REFS, STEM

AMD64 = platform.for_arch("amd64")
OTHER_ARCH_LINE = f"{'0' * 64}  k3s-airgap-images-multus-arm64.tar.zst\n"


def _registry_images(fixture_registry, tmp: Path, refs=REFS):
    open_source = sources.from_options("registry",
                                       registries=str(fixture_registry.registries_yaml(tmp)),
                                       default_endpoint=False)
    source = open_source(AMD64, BlobStore(tmp / "meta"))
    assert isinstance(source, Source)
    return source.images([reference.parse(r) for r in refs])


def _write(out: Path, images, layers: str, commit: bool = True) -> tuple[BundleSink, list[str]]:
    """The sink's files after write(); what the directory held before commit() (if any)."""
    out.mkdir(exist_ok=True)
    with AtomicOutputs(out) as outputs:
        store = BlobStore(out.parent / f"{out.name}-store")
        sink = BundleSink(outputs, name="k3s-airgap-images-multus", arch="amd64")
        assert isinstance(sink, Sink)
        scratch = outputs.scratch_dir() if layers == mutate.UNCOMPRESSED else None
        with Stage(images, store, layers=layers, scratch=scratch) as staged:
            sink.write(staged)
        before = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if commit:
            outputs.commit()
    return sink, before


@pytest.mark.parametrize(("build", "layers"), [("p1", mutate.PRESERVE),
                                               ("u1", mutate.UNCOMPRESSED)])
def test_a_bundle_read_back_and_written_again_is_the_same_bytes(builds, tmp_path, build, layers):
    # The bundle source and the bundle sink meet only at the image model: a bundle made by
    # `build` from a registry, read back as images and written again, is the same file.
    original = builds[build] / f"{STEM}.tar.zst"
    images = BundleSource(original).images([reference.parse(r) for r in REFS])
    sink, _ = _write(tmp_path / "out", images, layers)
    assert (tmp_path / "out" / f"{STEM}.tar.zst").read_bytes() == original.read_bytes()
    assert (tmp_path / "out" / f"{STEM}.txt").read_bytes() == \
        (builds[build] / f"{STEM}.txt").read_bytes()
    sums = (tmp_path / "out" / "sha256sum-amd64.txt").read_text()
    assert f"{sink.manifest['bundle']['sha256']}  {STEM}.tar.zst\n" in sums


def test_nothing_is_named_until_the_caller_commits(fixture_registry, tmp_path):
    images = _registry_images(fixture_registry, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sha256sum-amd64.txt").write_text(OTHER_ARCH_LINE)
    sink, before = _write(out, images, mutate.PRESERVE)
    assert not [n for n in before if n in sink.files and n != "sha256sum-amd64.txt"]
    assert sink.files == [f"{STEM}.tar.zst", f"{STEM}.txt", f"{STEM}.manifest.json",
                          "sha256sum-amd64.txt"]
    assert sorted(p.name for p in out.iterdir()) == sorted(sink.files)
    assert [i["reference"] for i in sink.manifest["images"]] == [
        str(reference.parse(r)) for r in REFS]
    assert (out / f"{STEM}.txt").read_text() == "".join(f"{reference.parse(r)}\n" for r in REFS)
    sums = (out / "sha256sum-amd64.txt").read_text()
    assert OTHER_ARCH_LINE in sums  # another architecture's line is kept
    check = subprocess.run(["sha256sum", "-c", "--ignore-missing", "sha256sum-amd64.txt"],
                           cwd=out, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == 2, check.stdout


def test_a_bad_layer_names_nothing_and_keeps_what_was_there(fixture_registry, tmp_path):
    images = _registry_images(fixture_registry, tmp_path)
    first = images[0]
    layer = first.layers[-1]
    bad = dataclasses.replace(layer, open=lambda: io.BytesIO(b"not the layer"))
    images[0] = dataclasses.replace(first, layers=(*first.layers[:-1], bad))
    out = tmp_path / "out"
    out.mkdir()
    (out / "sha256sum-amd64.txt").write_text(OTHER_ARCH_LINE)
    with pytest.raises(DigestMismatch):
        _write(out, images, mutate.PRESERVE)
    assert [p.name for p in out.iterdir()] == ["sha256sum-amd64.txt"]
    assert (out / "sha256sum-amd64.txt").read_text() == OTHER_ARCH_LINE


def test_from_options_checks_before_opening(tmp_path):
    with pytest.raises(InputError, match="--source 'podman'"):
        sources.from_options("podman")
    bad = tmp_path / "registries.yaml"
    bad.write_text("mirrors: [1, 2]\n")
    with pytest.raises(InputError, match=str(bad)):
        sources.from_options("registry", registries=str(bad))
    # The Docker source gets the pull policy (and refuses a bad one) but no registry setting.
    with pytest.raises(InputError, match="--pull 'sometimes'"):
        sources.from_options("docker", pull="sometimes")(AMD64, BlobStore(tmp_path / "s"))
    docker = sources.from_options("docker", pull="never")(AMD64, BlobStore(tmp_path / "s"))
    assert isinstance(docker, Source)


def test_the_names_of_the_signature_and_sbom_are_the_ones_their_readers_look_for():
    from bundler.bundleformat import sbom, signing
    from bundler.sinks.bundle import OutputNames

    for arch in ("amd64", "arm64/v8"):
        names = OutputNames.of("k3s-airgap-images-multus", arch)
        assert names.signature == signing.signature_path(names.manifest).name
        assert names.sbom == sbom.file_name(names.bundle)
