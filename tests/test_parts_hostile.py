"""A parts list against its reader: the list and the parts arrive over the same untrusted path.
What join writes and place lands is named by the list, so its names are held to what split
writes; what place copies is what verify checked, under the name verify checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bundler.bundleformat import compress, parts
from bundler.commands import place
from tests.cli_helpers import assert_one_line_error, bundler
from tests.conftest import BUNDLE, STEM

LIST = Path("/d/b.tar.zst.parts.json")
MANIFEST = STEM + ".manifest.json"


def _doc(whole: str = "b.tar.zst", names: list[str] | None = None) -> dict:
    names = names or parts.part_names(whole, 2)
    return {"format": parts.FORMAT, "version": parts.VERSION,
            "whole": {"name": whole, "size": 30, "sha256": "a" * 64},
            "parts": [{"name": names[0], "offset": 0, "size": 20, "sha256": "b" * 64},
                      {"name": names[1], "offset": 20, "size": 10, "sha256": "c" * 64}]}


def _refused(doc: dict, *fragments: str) -> None:
    with pytest.raises(Exception) as e:
        parts.loads(json.dumps(doc).encode(), LIST)
    assert type(e.value).__name__ == "InputError", e.value
    assert str(e.value).startswith(f"{LIST}: ") and "\n" not in str(e.value)
    for fragment in fragments:
        assert fragment in str(e.value), (fragment, str(e.value))


def test_the_names_split_writes_are_read():
    got = parts.loads(json.dumps(_doc()).encode(), LIST)
    assert [p.name for p in got.parts] == ["b.tar.zst.000", "b.tar.zst.001"]


@pytest.mark.parametrize("whole", ["registries.yaml", "sha256sum-amd64.txt", "evil.tar",
                                   ".b.tar.zst.1-aa.partial", ".hidden.tar.zst"])
def test_the_whole_is_named_as_a_bundle_join_may_write(whole):
    """join writes the whole under this name in the output directory."""
    _refused(_doc(whole), "whole.name")


def test_the_bundle_suffixes_are_the_ones_k3s_reads_zstd_from():
    assert parts.BUNDLE_SUFFIXES == compress.ZSTD_SUFFIXES


def test_names_in_part_problems_are_escaped(tmp_path):
    whole = "n\u0435w.tar.zst"  # a Cyrillic e: a look-alike of the name the user expects
    doc = _doc(whole)
    (tmp_path / "b.tar.zst.parts.json").write_text(json.dumps(doc))
    for command in ("verify", "join", "inspect"):
        run = bundler(command, str(tmp_path / "b.tar.zst.parts.json"))
        assert "\u0435" not in run.stdout + run.stderr, run.stdout + run.stderr


def _cut_at(bundle: Path, out: Path, size: int) -> Path:
    run = bundler("split", str(bundle), "--size", str(size), "-o", str(out))
    assert run.code == 0, run.stderr
    shutil.copy(bundle.with_name(MANIFEST), out)
    return out / (BUNDLE + parts.LIST_SUFFIX)


def test_a_part_boundary_inside_a_frame_header_verifies_and_places(builds, tmp_path):
    """A part that ends two bytes into a frame's magic number: the joined stream must read
    on into the next part, not stop short of what was asked for."""
    bundle = builds["p1"] / BUNDLE
    with open(bundle, "rb") as f:
        second = [frame.offset for frame in compress.frames(compress.Seeking(f))][1]
    listed = _cut_at(bundle, tmp_path / "parts", second + 2)
    run = bundler("verify", str(listed))
    assert run.code == 0, run.stdout + run.stderr
    run = bundler("place", str(listed), "--images-dir", str(tmp_path / "images"))
    assert run.code == 0, run.stdout + run.stderr
    assert (tmp_path / "images" / BUNDLE).read_bytes() == bundle.read_bytes()


def test_place_lands_the_whole_under_the_name_verify_checked(builds, tmp_path, monkeypatch):
    """The list swapped after verify read it, for one naming the same parts another whole:
    place must not land the checked bytes under a name no checksum file vouched for (one
    that replaces another bundle in agent/images)."""
    listed = _cut_at(builds["p1"] / BUNDLE, tmp_path / "parts", 100_000)
    swapped = json.loads(listed.read_text())
    other = "other-bundle.tar.zst"
    swapped["whole"]["name"] = other
    for part, name in zip(swapped["parts"], parts.part_names(other, len(swapped["parts"])),
                          strict=True):
        shutil.copy(listed.parent / part["name"], listed.parent / name)
        part["name"] = name
    real_read, reads = parts.read, []

    def read_then_swap(path):
        got = real_read(path)
        reads.append(path)
        Path(path).write_text(json.dumps(swapped))  # the attacker acts after each read
        return got

    monkeypatch.setattr(parts, "read", read_then_swap)
    done = place.place(listed, tmp_path / "images", check_import_space=False)
    assert done.path.name == BUNDLE
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [BUNDLE]


def test_join_refuses_a_list_whose_whole_is_named_for_another_file(tmp_path):
    """A list naming its whole registries.yaml: join refuses before reading a part."""
    doc = _doc("registries.yaml")
    (tmp_path / "b.tar.zst.parts.json").write_text(json.dumps(doc))
    run = bundler("join", str(tmp_path / "b.tar.zst.parts.json"), "-o", str(tmp_path / "o"))
    assert_one_line_error(run, "whole.name")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
