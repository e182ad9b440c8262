import pytest

from bundler import imagelist
from bundler.errors import InputError


def test_comments_blanks_and_duplicates(tmp_path):
    f = tmp_path / "images.txt"
    f.write_text("# head\n\nbusybox:1.36.1  # trailing comment\n  rancher/x:1\n"
                 "docker.io/library/busybox:1.36.1\n")
    refs = imagelist.read(f)
    assert [str(r) for r in refs] == ["docker.io/library/busybox:1.36.1", "docker.io/rancher/x:1"]
    assert imagelist.format_list(refs) == (
        "docker.io/library/busybox:1.36.1\ndocker.io/rancher/x:1\n")


@pytest.mark.parametrize(("text", "message"), [
    ("busybox\nBad/Name\n", "images.txt:2: invalid repository name"),
    ("busybox\n\nx y\n", "images.txt:3: one image reference a line"),
    ("# nothing\n", "images.txt: lists no images"),
])
def test_errors_name_file_and_line(tmp_path, text, message):
    f = tmp_path / "images.txt"
    f.write_text(text)
    with pytest.raises(InputError) as e:
        imagelist.read(f)
    assert str(e.value).startswith(f"{tmp_path}/{message}")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such image list"):
        imagelist.read(tmp_path / "nope.txt")


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.mkdir(), "is a directory, not an image list"),
    (lambda p: p.write_bytes(b"busybox\n" * 200_000), "larger than 1 MiB; not an image list"),
    (lambda p: p.symlink_to("/dev/zero"), "larger than 1 MiB; not an image list"),
    (lambda p: p.write_bytes(b"\x28\xb5\x2f\xfd\x00"), "not UTF-8 text (invalid start byte at "
                                                       "byte 1)"),
])
def test_a_file_that_is_not_an_image_list_is_one_line(tmp_path, make, message):
    path = tmp_path / "images.txt"
    make(path)
    with pytest.raises(InputError) as e:
        imagelist.read(path)
    assert str(e.value) == f"{path}: {message}"


def test_default_list_is_the_multus_chart():
    from pathlib import Path

    refs = imagelist.read(Path(__file__).parent.parent / "images.txt")
    assert [str(r) for r in refs] == [
        "docker.io/rancher/hardened-multus-cni:v4.3.0-build20260722",
        "docker.io/rancher/hardened-cni-plugins:v1.9.1-build20260717",
        "docker.io/rancher/mirrored-library-busybox:1.36.1",
    ]
