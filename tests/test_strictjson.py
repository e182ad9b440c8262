"""strictjson: JSON that Go's encoding/json would read differently is refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler import strictjson
from bundler.strictjson import StrictJSONError


@pytest.mark.parametrize(("data", "fragment"), [
    (b'{"manifests": [{"digest": "a", "Digest": "b"}]}', "duplicate key"),
    (b'{"manifests": [{"size": 1, "size": 2}]}', "duplicate key"),
    # U+017F and U+212A fold to "s" and "k": Go reads these as "size" and "kind"-less fields
    (b'{"manifests": [{"\xc5\xbfize": 1}]}', "read as 'size' by Go"),
    (b'{"Annotations": {}}', "read as 'annotations' by Go"),
    (b'{"manifests": [{"platform": {"OS": "linux"}}]}', "read as 'os' by Go"),
    (b'{"MEDIATYPE": "x"}', "read as 'mediaType'"),
])
def test_struct_keys_go_folds_are_refused(data, fragment):
    with pytest.raises(StrictJSONError, match=fragment):
        strictjson.loads(data, strictjson.INDEX)
    strictjson.loads(data)  # without a schema only the syntax is checked


@pytest.mark.parametrize(("data", "schema", "fragment"), [
    (b'{"layers": [{}, {"DIGEST": "x"}]}', strictjson.MANIFEST, "read as 'digest'"),
    (b'{"rootfs": {"Diff_IDs": []}}', strictjson.CONFIG, "read as 'diff_ids'"),
    (b'[{"config": "x"}]', strictjson.DOCKER_MANIFEST, "read as 'Config'"),
])
def test_struct_keys_in_other_documents(data, schema, fragment):
    with pytest.raises(StrictJSONError, match=fragment):
        strictjson.loads(data, schema)


@pytest.mark.parametrize(("data", "fragment"), [
    (b'{"a": NaN}', "NaN"),
    (b'{"a": Infinity}', "Infinity"),
    (b'{"a": -Infinity}', "Infinity"),
    (b'{"size": 9223372036854775808}', "64 bits"),
    (b'{"size": -9223372036854775809}', "64 bits"),
    (b'\xef\xbb\xbf{}', "byte-order mark"),
    (b'{"a": "\\ud800"}', "surrogate"),
    (b'{"\\udfff": 1}', "surrogate"),
    (b'["\xed\xa0\x80"]', "not UTF-8"),  # a surrogate encoded as raw bytes
    (b'{"a": "\xff"}', "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"a": 1} x', "Extra data"),
    (b"", "Expecting value"),
])
def test_refused(data, fragment):
    with pytest.raises(StrictJSONError, match=fragment):
        strictjson.loads(data)


@pytest.mark.parametrize("data", [
    b'{"config": {"Env": ["A=b"], "Labels": {"Size": "1"}}}',  # a map: keys as they are
    b'{"a": "\\ud83d\\ude00"}',  # a surrogate pair is one character: fine
    b'{"size": 9223372036854775807}',
    b'{"a": 1.5, "b": null, "c": true}',
])
def test_accepted(data):
    for schema in (strictjson.INDEX, strictjson.MANIFEST, strictjson.CONFIG):
        assert strictjson.loads(data, schema) == json.loads(data)


def test_docker_save_spelling_is_accepted():
    doc = b'[{"Config": "x", "RepoTags": [], "Layers": []}]'
    assert strictjson.loads(doc, strictjson.DOCKER_MANIFEST) == json.loads(doc)


def test_maps_keep_their_keys_as_go_does():
    # annotations and labels are Go maps: no folding, so no disagreement to refuse
    doc = b'{"annotations": {"Size": "1", "size": "2"}, "config": {"Labels": {"Digest": "x"}}}'
    assert strictjson.loads(doc, strictjson.MANIFEST)["annotations"] == {"Size": "1",
                                                                         "size": "2"}
    assert strictjson.loads(doc, strictjson.CONFIG)["config"]["Labels"] == {"Digest": "x"}


def test_is_count():
    assert strictjson.is_count(0) and strictjson.is_count(strictjson.MAX_INT)
    for bad in (True, 5.0, -1, "5", None, strictjson.MAX_INT + 1):
        assert not strictjson.is_count(bad), bad


_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text()
# Lower-case ASCII keys that are not spec fields: never folded onto each other or a field.
_keys = st.from_regex(r"x[a-z0-9_]{0,8}", fullmatch=True)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) |
                       st.dictionaries(_keys, inner, max_size=4), max_leaves=20)


@given(_values)
@settings(max_examples=300, deadline=None)
def test_what_go_and_python_read_alike_round_trips(value):
    data = json.dumps(value, ensure_ascii=False).encode()
    assert strictjson.loads(data) == json.loads(data)


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_any_bytes_parse_or_raise_strict_json_error(data):
    try:
        strictjson.loads(data)
    except StrictJSONError:
        pass


@given(st.text(max_size=60))
@settings(max_examples=500, deadline=None)
def test_any_text_parses_or_raises_strict_json_error(text):
    try:
        strictjson.loads(text.encode("utf-8", "surrogatepass"))
    except StrictJSONError:
        pass


@pytest.mark.parametrize(("created", "ok"), [
    ("2024-02-29T23:59:59Z", True), ("2023-02-29T00:00:00Z", False),
    ("2000-02-29T00:00:00Z", True), ("1900-02-29T00:00:00Z", False),
    ("2024-04-31T00:00:00Z", False), ("2024-12-31T00:00:00.5+05:30", True),
    ("2024-13-01T00:00:00Z", False), ("2024-00-01T00:00:00Z", False),
    ("2024-01-00T00:00:00Z", False), ("0000-01-01T00:00:00Z", False),
    ("2024-01-01T24:00:00Z", False), ("2024-01-01T00:60:00Z", False),
    ("2024-01-01T00:00:60Z", False), ("2024-01-01T00:00:00+24:00", False),
    ("2024-01-01T00:00:00-01:60", False), ("2024-01-01 00:00:00Z", False),
])
def test_created_is_a_real_rfc_3339_time(created, ok):
    """Go's time.Time checks the calendar: a config with February 30 fails containerd's
    import, so it fails verify too."""
    doc = json.dumps({"created": created}).encode()
    if ok:
        strictjson.loads(doc, strictjson.CONFIG)
    else:
        with pytest.raises(StrictJSONError, match="not an RFC 3339 time"):
            strictjson.loads(doc, strictjson.CONFIG)


def _time_ok(created: str) -> bool:
    try:
        strictjson.loads(json.dumps({"created": created}).encode(), strictjson.CONFIG)
    except StrictJSONError:
        return False
    return True


@pytest.mark.parametrize("year", [2023, 2024, 1900, 2000])
def test_every_months_last_day_is_a_time_and_the_day_after_is_not(year):
    import calendar

    for month in range(1, 13):
        last = calendar.monthrange(year, month)[1]
        assert _time_ok(f"{year}-{month:02}-{last:02}T00:00:00Z"), (year, month)
        assert not _time_ok(f"{year}-{month:02}-{last + 1:02}T00:00:00Z"), (year, month)
        assert _time_ok(f"{year}-{month:02}-01T00:00:00Z") and \
            not _time_ok(f"{year}-{month:02}-00T00:00:00Z")


def test_time_fields_at_their_bounds():
    assert _time_ok("0001-01-01T23:59:59+23:59") and _time_ok("9999-12-31T00:00:00-00:00")
    assert _time_ok("2024-01-01T00:00:00.000000001Z")
    for bad in ("2024-01-01T00:00:00.Z", "2024-01-01T00:00:00+2359", "2024-01-01T00:00Z",
                "2024-01-01T00:00:00z", "2024-1-01T00:00:00Z", "2024-01-01T00:00:00+23:59x"):
        assert not _time_ok(bad), bad


@pytest.mark.parametrize("escape", ["\\ud800", "\\uD800", "\\udbff", "\\uDc00", "\\uDFFF",
                                    "\\uDAbC"])
@pytest.mark.parametrize("where", ['{"a": "x%s"}', '{"%s": 1}', '[[{"b": ["%s"]}]]'])
def test_every_lone_surrogate_escape_is_refused(escape, where):
    with pytest.raises(StrictJSONError, match="lone UTF-16 surrogate"):
        strictjson.loads((where % escape).encode())
    # after an escaped backslash it is text, not an escape
    assert strictjson.loads((where % ("\\\\" + escape[1:])).encode())


@pytest.mark.parametrize(("data", "schema", "message"), [
    (b'[]', strictjson.INDEX, "the document is not an object"),
    (b'{}', strictjson.DOCKER_MANIFEST, "the document is not a list"),
    (b'{"manifests": {}}', strictjson.INDEX, "manifests is not a list"),
    (b'{"manifests": [{}, 1]}', strictjson.INDEX, "manifests[1] is not an object"),
    (b'{"manifests": [{"size": true}]}', strictjson.INDEX, "manifests[0].size is not an integer"),
    (b'{"manifests": [{"size": 1.0}]}', strictjson.INDEX, "manifests[0].size is not an integer"),
    (b'{"schemaVersion": "2"}', strictjson.MANIFEST, "schemaVersion is not an integer"),
    (b'{"config": {"digest": 5}}', strictjson.MANIFEST, "config.digest is not a string"),
    (b'{"annotations": {"a": "x", "b": 1}}', strictjson.INDEX,
     "annotations is not an object of strings"),
    (b'{"annotations": ["a"]}', strictjson.INDEX, "annotations is not an object of strings"),
    (b'{"layers": [{"platform": {"os.features": ["a", 2]}}]}', strictjson.MANIFEST,
     "layers[0].platform.os.features[1] is not a string"),
    (b'{"rootfs": {"diff_ids": "sha256:x"}}', strictjson.CONFIG, "rootfs.diff_ids is not a list"),
    (b'{"config": []}', strictjson.CONFIG, "config is not an object"),
    (b'{"history": [{"empty_layer": 0}]}', strictjson.CONFIG,
     "history[0].empty_layer is not a boolean"),
    (b'[{"Layers": ["a"], "RepoTags": "x:1"}]', strictjson.DOCKER_MANIFEST,
     "[0].RepoTags is not a list"),
])
def test_values_go_cannot_decode_into_their_field_are_refused(data, schema, message):
    with pytest.raises(StrictJSONError) as e:
        strictjson.loads(data, schema)
    assert str(e.value) == message


def test_null_and_the_right_types_are_accepted_anywhere():
    doc = (b'{"schemaVersion": 2, "manifests": [null, {"size": 0, "annotations": {}, '
           b'"platform": {"os.features": null}}], "annotations": {"a": "b"}, "subject": null}')
    assert strictjson.loads(doc, strictjson.INDEX) == json.loads(doc)


def test_a_document_may_hold_exactly_max_objects():
    n = strictjson.MAX_OBJECTS
    assert n == 100_000
    assert len(strictjson.loads(b"[" + b"{}," * (n - 1) + b"{}]")) == n
    with pytest.raises(StrictJSONError, match=f"^more than {n} objects$"):
        strictjson.loads(b"[" + b"{}," * n + b"{}]")


def test_object_or_empty():
    obj = strictjson.loads(b'{"a": 1}')
    assert strictjson.object_or_empty(obj) is obj
    for other in ([], "x", None, 1):
        assert strictjson.object_or_empty(other) == {}
