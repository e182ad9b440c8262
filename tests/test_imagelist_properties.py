"""Properties of imagelist.read: every list is image references or one `file:line` error."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bundler import imagelist
from bundler.errors import InputError
from tests.test_reference_properties import references

# A line of an image list as people (and accidents) write them.
lines = st.one_of(
    references().map(lambda c: c[0]),
    references().map(lambda c: f"  {c[0]}\t# pinned\r"),
    st.sampled_from(["", "   ", "# comment", "#", "\r", "busybox # x # y"]),
    st.text(alphabet="abz09:/@.#-_ \t\x0b\x0c\x1c\u2028\u0085é", max_size=30),
)


def _first_bad_line(text: str) -> int | None:
    """The number (as editors count) of the first line that is not blank, a comment or one
    reference; None when every line is fine."""
    for number, line in enumerate(text.split("\n"), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if re.search(r"\s", entry):
            return number
        try:
            imagelist.reference.parse(entry)
        except InputError:
            return number
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, max_size=12))
def test_a_list_is_its_references_or_an_error_at_the_first_bad_line(rows):
    text = "\n".join(rows)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "images.txt"
        path.write_text(text, encoding="utf-8", newline="")
        bad = _first_bad_line(text)
        try:
            refs = imagelist.read(path)
        except InputError as e:
            message = str(e)
            assert "\n" not in message and len(message) < 600, message
            if bad is not None:
                assert message.startswith(f"{path}:{bad}: "), (message, bad)
            else:
                assert message == f"{path}: lists no images"
            return
    assert bad is None
    assert refs and len(set(refs)) == len(refs)
    # What we write beside the bundle reads back as the same list.
    assert imagelist.parse(imagelist.format_list(refs), "again") == refs


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_list_or_an_input_error(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "images.txt"
        path.write_bytes(data)
        try:
            imagelist.read(path)
        except InputError as e:
            assert str(e).startswith(f"{path}:") and "\n" not in str(e)
