"""The parts list: written deterministically, read back strictly, whatever it holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundler.bundleformat import parts
from bundler.commands.split import parse_size
from bundler.errors import InputError

LIST = Path("/d/b.tar.zst.parts.json")
HEX = st.text("0123456789abcdef", min_size=64, max_size=64)


@st.composite
def parts_lists(draw) -> parts.PartsList:
    sizes = draw(st.lists(st.integers(1, 1 << 40), min_size=1, max_size=12))
    names = parts.part_names("b.tar.zst", len(sizes))
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    return parts.PartsList(LIST.parent, "b.tar.zst", sum(sizes), draw(HEX),
                           tuple(parts.Part(n, o, s, draw(HEX))
                                 for n, o, s in zip(names, offsets, sizes, strict=True)))


def _doc(listed: parts.PartsList) -> dict:
    return json.loads(parts.dumps(listed))


def _refused(doc: object, *fragments: str) -> None:
    with pytest.raises(InputError) as e:
        parts.loads(json.dumps(doc).encode(), LIST)
    assert str(e.value).startswith(f"{LIST}: ")
    assert "\n" not in str(e.value)
    for fragment in fragments:
        assert fragment in str(e.value), (fragment, str(e.value))


@given(parts_lists())
def test_a_written_list_reads_back_the_same_and_its_bytes_are_fixed(listed):
    data = parts.dumps(listed)
    assert parts.loads(data, LIST) == listed
    assert parts.dumps(parts.loads(data, LIST)) == data
    assert data.endswith(b"}\n") and list(json.loads(data)) == ["format", "version", "whole",
                                                                 "parts"]


# Any JSON value, nested a little: what a hostile or damaged list may hold.
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2, 1 << 64) | st.text(max_size=8)
                     | HEX, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)


@given(parts_lists(), st.data())
def test_any_edit_of_a_list_is_refused_or_still_a_consistent_list(listed, data):
    doc = _doc(listed)
    # Replace one field (or add one) somewhere in the document with anything at all.
    where = data.draw(st.sampled_from(["top", "whole", "part"]))
    target = doc if where == "top" else doc["whole"] if where == "whole" else \
        data.draw(st.sampled_from(doc["parts"]))
    key = data.draw(st.sampled_from([*target, "extra"]))
    target[key] = data.draw(_JSON)
    try:
        got = parts.loads(json.dumps(doc).encode(), LIST)
    except InputError as e:
        assert str(e).startswith(f"{LIST}: ") and "\n" not in str(e)
        return
    # What is accepted holds every promise the reader makes.
    offset = 0
    for p in got.parts:
        assert "/" not in p.name and p.name not in (".", "..") and p.offset == offset
        assert p.size > 0 and len(p.sha256) == 64
        offset += p.size
    assert offset == got.size and got.name not in {p.name for p in got.parts}


@given(st.binary(max_size=300))
def test_any_bytes_are_a_list_or_one_input_error(data):
    try:
        parts.loads(data, LIST)
    except InputError as e:
        assert "\n" not in str(e)


def _one() -> dict:
    return _doc(parts.PartsList(LIST.parent, "b.tar.zst", 30, "a" * 64, (
        parts.Part("b.tar.zst.000", 0, 20, "b" * 64),
        parts.Part("b.tar.zst.001", 20, 10, "c" * 64))))


@pytest.mark.parametrize("name", ["../b.tar.zst.001", "sub/b.tar.zst.001", "/etc/passwd", "..",
                                  ".", "", "a\\b", "a\nb", "b.tar.zst", "b.tar.zst.000",
                                  "b.tar.zst.parts.json"])
def test_a_part_name_that_is_no_plain_new_file_name_is_refused(name):
    doc = _one()
    doc["parts"][1]["name"] = name
    _refused(doc, "parts[1].name")


@pytest.mark.parametrize("name", ["../b.tar.zst", "x/b.tar.zst", ".."])
def test_a_whole_name_that_is_a_path_is_refused(name):
    doc = _one()
    doc["whole"]["name"] = name
    _refused(doc, "whole.name", "not a plain file name")


def test_parts_must_follow_each_other_from_byte_zero_and_add_up():
    doc = _one()
    doc["parts"][1]["offset"] = 21
    _refused(doc, "b.tar.zst.001", "offset 21, want 20")
    doc = _one()
    doc["parts"].reverse()
    _refused(doc, "parts[0]", "offset 20, want 0")
    doc = _one()
    doc["whole"]["size"] = 31
    _refused(doc, "add up to 30 bytes, whole.size says 31")
    doc = _one()
    doc["parts"][1]["size"] = 0
    doc["whole"]["size"] = 20
    _refused(doc, "size 0")
    doc = _one()
    doc["parts"] = []
    _refused(doc, "non-empty")


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d.update(extra=1), "unknown field 'extra'"),
    (lambda d: d["whole"].pop("sha256"), "whole: no 'sha256'"),
    (lambda d: d["parts"][0].update(mode=1), "parts[0]: unknown field 'mode'"),
    (lambda d: d.update(version=2), "version 2"),
    (lambda d: d.update(format="other"), "format 'other'"),
    (lambda d: d["parts"][0].update(sha256="B" * 64), "parts[0].sha256"),
    (lambda d: d["whole"].update(size="30"), "whole.size is not an integer"),
    (lambda d: d["parts"][0].update(size=None), "parts[0].size: null"),
    (lambda d: d["parts"][0].update(size=True), "parts[0].size is not an integer"),
])
def test_fields_are_exactly_the_format_s(edit, fragment):
    doc = _one()
    edit(doc)
    _refused(doc, fragment)


def test_duplicate_or_case_folded_keys_are_refused():
    data = json.dumps(_one()).replace('"version": 1', '"version": 1, "Version": 1').encode()
    with pytest.raises(InputError, match="duplicate key 'Version'"):
        parts.loads(data, LIST)


def test_too_many_parts_and_too_large_a_list_are_refused(tmp_path):
    listed = parts.PartsList(LIST.parent, "b", parts.MAX_PARTS + 1, "a" * 64, tuple(
        parts.Part(n, i, 1, "b" * 64)
        for i, n in enumerate(parts.part_names("b", parts.MAX_PARTS + 1))))
    with pytest.raises(ValueError, match="10001 parts, more than 10000"):
        parts.dumps(listed)
    big = tmp_path / "b.parts.json"
    big.write_bytes(b" " * (parts.MAX_LIST + 1))
    with pytest.raises(InputError, match="more than 4194304 bytes"):
        parts.read(big)


def test_part_names_sort_in_order_past_a_thousand():
    names = parts.part_names("b", 1001)
    assert names[0] == "b.0000" and names[-1] == "b.1000" and sorted(names) == names
    assert parts.part_names("b", 2) == ["b.000", "b.001"]


@pytest.mark.parametrize("text, size", [("4GiB", 4 << 30), ("700MB", 700_000_000),
                                        ("1000", 1000), ("1kB", 1000), ("1KiB", 1024),
                                        ("2 TiB", 2 << 40), ("5B", 5), ("1TB", 10**12)])
def test_sizes_take_si_and_iec_units_as_they_say(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["4G", "4g", "4gib", "4KB", "4 Gi", "-1", "0", "1.5GB", "",
                                  "GiB", "4 GiB B"])
def test_sizes_in_no_exact_unit_are_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_the_default_part_size_is_the_largest_file_fat32_holds():
    # FAT32 records a file's size in 32 bits: 4 GiB less one byte is the most it holds.
    assert parts.FAT32_MAX == 2**32 - 1
    assert parse_size("4GiB") == parts.FAT32_MAX + 1


def test_part_names_have_three_digits_until_a_thousand_parts():
    assert parts.part_names("b.tar.zst", 2) == ["b.tar.zst.000", "b.tar.zst.001"]
    assert parts.part_names("b.tar.zst", 1000)[-1] == "b.tar.zst.999"
    assert parts.part_names("b.tar.zst", 1001)[-2:] == ["b.tar.zst.0999", "b.tar.zst.1000"]


def test_a_written_list_is_indented_by_two_spaces():
    text = parts.dumps(parts.loads(json.dumps(_one()).encode(), LIST)).decode()
    assert text.startswith('{\n  "format": ') and '\n    "name": "b.tar.zst"' in text


@pytest.mark.parametrize("where, fragment", [
    ("b.tar.zst.parts.json", "no such parts list"),
    ("dir", "not a regular file"),
    ("file/b.tar.zst.parts.json", "cannot read (Not a directory)"),
])
def test_a_list_that_cannot_be_read_is_named(tmp_path, where, fragment):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").touch()
    path = tmp_path / where
    with pytest.raises(InputError) as e:
        parts.read(path)
    assert str(e.value).startswith(f"{path}: {fragment}"), str(e.value)


@pytest.mark.parametrize("size", [0, -1])
def test_a_whole_of_no_bytes_is_refused(size):
    doc = _one()
    doc["whole"]["size"] = size
    _refused(doc, f"whole.size {size}: want a positive byte count")


def test_at_most_max_parts_and_not_one_more():
    doc = _one()
    n = parts.MAX_PARTS
    doc["parts"] = [{"name": f"b.tar.zst.{i:05d}", "offset": i, "size": 1, "sha256": "b" * 64}
                    for i in range(n)]
    doc["whole"]["size"] = n
    parts.loads(json.dumps(doc).encode(), LIST)  # exactly MAX_PARTS: a list
    doc["parts"].append({"name": "b.tar.zst.x", "offset": n, "size": 1, "sha256": "b" * 64})
    doc["whole"]["size"] = n + 1
    _refused(doc, f"{n + 1} parts, more than {n}")


@pytest.mark.parametrize("length, ok", [(255, True), (256, False)])
def test_a_part_name_is_at_most_255_bytes(length, ok):
    doc = _one()
    doc["parts"][1]["name"] = "p" * length
    if ok:
        parts.loads(json.dumps(doc).encode(), LIST)
    else:
        _refused(doc, "parts[1].name", "not a file name bundler writes")


def test_an_entry_that_is_no_object_and_a_digest_with_more_after_it_are_refused():
    doc = _one()
    doc["whole"] = ["b.tar.zst"]
    _refused(doc, "whole is not an object")
    doc = _one()
    doc["parts"][0]["sha256"] = "b" * 64 + "0"
    _refused(doc, "parts[0].sha256", "want 64 lowercase hex digits")
