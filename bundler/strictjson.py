"""JSON from untrusted places (bundles, registries), read as Go reads it, or refused.

containerd reads index.json, manifests and configs with Go's encoding/json. Wherever Python's
json module and Go's could read the same bytes differently, verify could approve one document
while containerd imports another, so those inputs are refused instead:
- Go matches object keys to struct fields case-insensitively, with Unicode folding
  (`"Digest"`, `"ſize"` and `"size"` are one field to Go, three to Python) and keeps the last
  duplicate: in the objects that are structs to containerd (descriptors, platforms, index,
  manifest, config, rootfs, docker's manifest.json), keys equal under case folding are refused,
  and so are keys that fold to a field name without being spelled exactly as it;
- lone UTF-16 surrogates (`"\\ud800"`, or the raw bytes) become U+FFFD in Go and stay in Python;
- a byte-order mark, NaN and Infinity are errors to Go and accepted by Python;
- numbers Go stores in int64 (sizes) overflow past 2^63-1;
- nesting deep enough to exhaust Python's recursion ends in RecursionError, not a message.
"""

from __future__ import annotations

import json

# The Go structs whose fields verify relies on, as (field names, struct-typed fields). Only
# these objects are checked for folded keys: maps (annotations, labels) keep their keys as
# they are in Go too, so "Size" and "size" there are two keys to both readers.
Schema = tuple[frozenset, dict]
_PLATFORM: Schema = (frozenset({"architecture", "os", "os.version", "os.features", "variant",
                                "features"}), {})
_DESCRIPTOR: Schema = (frozenset({"mediaType", "digest", "size", "urls", "annotations", "data",
                                  "platform", "artifactType"}), {"platform": _PLATFORM})
INDEX: Schema = (frozenset({"schemaVersion", "mediaType", "artifactType", "manifests",
                            "subject", "annotations"}),
                 {"manifests": _DESCRIPTOR, "subject": _DESCRIPTOR})
MANIFEST: Schema = (frozenset({"schemaVersion", "mediaType", "artifactType", "config",
                               "layers", "subject", "annotations"}),
                    {"config": _DESCRIPTOR, "layers": _DESCRIPTOR, "subject": _DESCRIPTOR})
CONFIG: Schema = (frozenset({"created", "author", "architecture", "os", "os.version",
                             "os.features", "variant", "config", "rootfs", "history"}),
                  {"rootfs": (frozenset({"type", "diff_ids"}), {})})
DOCKER_MANIFEST: Schema = (frozenset({"Config", "RepoTags", "Layers", "Parent",
                                      "LayerSources"}), {})
OCI_LAYOUT: Schema = (frozenset({"imageLayoutVersion"}), {})

MAX_INT = (1 << 63) - 1
_BOM = b"\xef\xbb\xbf"


class StrictJSONError(ValueError):
    """The bytes are not JSON that Go and Python read alike; the message says why."""


def loads(data: bytes, schema: Schema | None = None) -> object:
    """Parse `data` (UTF-8 JSON), refusing what Go's encoding/json would read differently;
    with `schema`, the objects that are Go structs in it get their keys checked too."""
    if data.startswith(_BOM):
        raise StrictJSONError("starts with a byte-order mark")
    try:
        text = data.decode("utf-8")  # strict: no surrogates, no invalid bytes
    except UnicodeDecodeError as e:
        raise StrictJSONError(f"not UTF-8 (byte {e.start})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_object, parse_constant=_constant,
                         parse_int=_int)
    except RecursionError:
        raise StrictJSONError("nested too deeply") from None
    except StrictJSONError:
        raise
    except ValueError as e:
        raise StrictJSONError(str(e)) from None
    _no_surrogates(doc)
    if schema is not None:
        _check_struct(doc, schema)
    return doc


class _Object(dict):
    """A JSON object that remembers every key as written, duplicates included."""

    __slots__ = ("written",)


def _object(pairs: list[tuple[str, object]]) -> dict:
    obj = _Object(pairs)
    obj.written = [key for key, _ in pairs]
    return obj


def _check_struct(doc: object, schema: Schema) -> None:
    fields, nested = schema
    if isinstance(doc, list):
        for item in doc:
            _check_struct(item, schema)
        return
    if not isinstance(doc, _Object):
        return  # a wrong type is for the caller to report
    folded_fields = {f.casefold(): f for f in fields}
    seen: dict[str, str] = {}
    for key in doc.written:
        folded = key.casefold()
        if folded in seen:
            raise StrictJSONError(f"duplicate key {key!r} (as {seen[folded]!r})")
        seen[folded] = key
        field = folded_fields.get(folded)
        if field is not None and key != field:
            raise StrictJSONError(f"key {key!r} is read as {field!r} by Go, not by Python")
    for field, inner in nested.items():
        if field in doc:
            _check_struct(doc[field], inner)


def _constant(name: str) -> object:
    raise StrictJSONError(f"{name} is not JSON")


def _int(text: str) -> int:
    value = int(text)
    if not -MAX_INT - 1 <= value <= MAX_INT:
        raise StrictJSONError(f"number {text[:30]} does not fit 64 bits")
    return value


def _no_surrogates(doc: object) -> None:
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                _check_text(key)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StrictJSONError("a string holds a lone UTF-16 surrogate") from None


def is_count(value: object) -> bool:
    """Whether `value` is a JSON integer Go reads into an int64 size (not a bool, not 5.0)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT
