"""text.shown: the one way untrusted text reaches a message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundler.text import NAME_LIMIT, quoted, shown


def test_plain_values_are_shown_as_they_are():
    assert shown("v1.36.1") == "v1.36.1"
    assert shown(42) == "42"


def test_anything_else_is_shown_escaped():
    assert shown("a\x1b[2Jb") == "'a\\x1b[2Jb'"
    assert shown("caf\u00e9") == "'caf\\xe9'"  # no look-alikes: ASCII only
    assert shown(True) == "True"  # not an integer to a JSON reader, so its repr
    assert shown(None) == "None"
    assert shown(["x"]) == "['x']"
    assert shown(b"\x00ab") == "b'\\x00ab'"
    assert shown("plain", quote=True) == "'plain'"


def test_long_values_are_cut_to_the_limit():
    assert shown("x" * 80) == "x" * 80
    assert shown("x" * 81) == "x" * 77 + "..."
    # a quoted value keeps its closing quote, so the cut shows
    cut = shown("\x01" + "y" * 200)
    assert len(cut) == 80 and cut == "'\\x01" + "y" * (80 - 5 - 4) + "...'"
    assert len(quoted("z" * 500)) == NAME_LIMIT and quoted("z" * 500).endswith("...'")
    assert quoted("z" * (NAME_LIMIT - 2)) == repr("z" * (NAME_LIMIT - 2))


@given(st.one_of(st.text(), st.binary(), st.integers(), st.none(), st.booleans(),
                 st.lists(st.text(), max_size=3)),
       st.booleans(), st.integers(8, 300))
def test_whatever_comes_in_one_bounded_printable_line_goes_out(value, quote, limit):
    out = shown(value, quote=quote, limit=limit)
    assert len(out) <= limit
    assert out.isascii() and out.isprintable()


@pytest.mark.parametrize(("value", "text"), [
    ("sha256:ab", "sha256:ab"), (42, "42"), (-1, "-1"),
    (True, "True"), (None, "None"), (1.5, "1.5"),  # not str or int: repr
    ("two\nlines", "'two\\nlines'"), ("\x1b[31mred", "'\\x1b[31mred'"),
    ("caf\u00e9", "'caf\\xe9'"),
    ("", ""), ({"a": 1}, "{'a': 1}"), (["x"], "['x']"),
    ("x" * 80, "x" * 80), ("x" * 81, "x" * 77 + "..."), ("\n" * 40, "'" + "\\n" * 37 + "\\...'"),
])
def test_shown_is_plain_only_for_printable_ascii_and_numbers_and_at_most_80(value, text):
    assert shown(value) == text
    assert len(shown(value)) <= 80
