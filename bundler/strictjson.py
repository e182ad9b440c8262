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
import re
from dataclasses import dataclass
from functools import cached_property

# The Go types containerd decodes these documents into (opencontainers image-spec's Index,
# Manifest, Descriptor, Platform and Image; docker save's manifest.json entries): a value Go
# cannot decode into its field's type fails the whole import, so it is refused here too. Only
# struct objects are checked for folded keys: maps (annotations, labels) keep their keys as
# they are in Go too, so "Size" and "size" there are two keys to both readers. null decodes
# into any type in Go (it leaves the zero value), so it is accepted everywhere.
STR, INT, BOOL, TIME, OBJECT, STRMAP = "string", "integer", "boolean", "RFC 3339 time", \
    "object", "object of strings"


@dataclass(frozen=True)
class ListOf:
    item: object


@dataclass(frozen=True)
class Struct:
    fields: dict

    def __post_init__(self) -> None:
        # _check_keys' fast path holds because no two fields fold alike
        assert len(self.folded) == len(self.fields), self.fields

    @cached_property
    def folded(self) -> dict[str, str]:
        """Field names by their case folding."""
        return {name.casefold(): name for name in self.fields}

    def __hash__(self) -> int:
        return id(self)


_ARTICLE = {INT: "an", OBJECT: "an", STRMAP: "an", TIME: "an"}
STRLIST = ListOf(STR)
_PLATFORM = Struct({"architecture": STR, "os": STR, "os.version": STR,
                    "os.features": STRLIST, "variant": STR, "features": STRLIST})
_DESCRIPTOR = Struct({"mediaType": STR, "digest": STR, "size": INT, "urls": STRLIST,
                      "annotations": STRMAP, "data": STR, "platform": _PLATFORM,
                      "artifactType": STR})
INDEX = Struct({"schemaVersion": INT, "mediaType": STR, "artifactType": STR,
                "manifests": ListOf(_DESCRIPTOR), "subject": _DESCRIPTOR,
                "annotations": STRMAP})
MANIFEST = Struct({"schemaVersion": INT, "mediaType": STR, "artifactType": STR,
                   "config": _DESCRIPTOR, "layers": ListOf(_DESCRIPTOR),
                   "subject": _DESCRIPTOR, "annotations": STRMAP})
_HISTORY = Struct({"created": TIME, "created_by": STR, "author": STR, "comment": STR,
                   "empty_layer": BOOL})
CONFIG = Struct({"created": TIME, "author": STR, "architecture": STR, "os": STR,
                 "os.version": STR, "os.features": STRLIST, "variant": STR,
                 "config": OBJECT, "rootfs": Struct({"type": STR, "diff_ids": STRLIST}),
                 "history": ListOf(_HISTORY)})
DOCKER_MANIFEST = ListOf(Struct({"Config": STR, "RepoTags": STRLIST, "Layers": STRLIST,
                                 "Parent": STR, "LayerSources": OBJECT}))
OCI_LAYOUT = Struct({"imageLayoutVersion": STR})
Schema = Struct | ListOf

# Go's time.Time reads RFC 3339 with optional fractional seconds, and nothing else.
_TIME_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?"
                      r"(Z|[+-](\d{2}):(\d{2}))")
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Objects one document may hold: each costs Python far more memory than its bytes; real
# manifests and configs hold a few hundred (a 30,000-layer manifest, 30,000).
MAX_OBJECTS = 100_000

MAX_INT = (1 << 63) - 1
# Strict UTF-8 holds no surrogate, so one in a parsed document came from an escape, \ud800
# to \udfff: this finds every such escape (and a few look-alikes after an escaped backslash,
# which the exact walk then clears), so documents without one skip the walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
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
    count = [0]

    def make_object(pairs: list[tuple[str, object]]) -> dict:
        count[0] += 1
        if count[0] > MAX_OBJECTS:
            raise StrictJSONError(f"more than {MAX_OBJECTS} objects")
        return _object(pairs)

    try:
        doc = json.loads(text, object_pairs_hook=make_object, parse_constant=_constant,
                         parse_int=_int)
    except RecursionError:
        raise StrictJSONError("nested too deeply") from None
    except StrictJSONError:
        raise
    except ValueError as e:
        raise StrictJSONError(str(e)) from None
    if _SURROGATE_ESCAPE.search(text):  # else none can be in it: the text is strict UTF-8
        _no_surrogates(doc)
    if schema is not None:
        _check(doc, schema, "")
    return doc


class _Object(dict):
    """A JSON object that remembers every key as written, duplicates included."""

    __slots__ = ("written",)


def _object(pairs: list[tuple[str, object]]) -> dict:
    obj = _Object(pairs)
    obj.written = [key for key, _ in pairs]
    return obj


def _check(value: object, kind: object, where: str) -> None:
    """Raise unless Go decodes `value` into a field of type `kind` as Python reads it."""
    if value is None:
        return
    if isinstance(kind, Struct):
        if not isinstance(value, _Object):
            raise StrictJSONError(f"{where or 'the document'} is not an object")
        _check_keys(value, kind, where)
        for field, inner in kind.fields.items():
            if field in value:
                _check(value[field], inner, f"{where}.{field}" if where else field)
    elif isinstance(kind, ListOf):
        if not isinstance(value, list):
            raise StrictJSONError(f"{where or 'the document'} is not a list")
        for i, item in enumerate(value):
            _check(item, kind.item, f"{where}[{i}]")
    elif not _is(value, kind):
        raise StrictJSONError(f"{where} is not {_ARTICLE.get(kind, 'a')} {kind}")


def _is(value: object, kind: object) -> bool:
    if kind == STR:
        return isinstance(value, str)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == OBJECT:
        return isinstance(value, dict)
    if kind == STRMAP:
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if kind == TIME:
        return isinstance(value, str) and _is_time(value)
    raise AssertionError(f"unknown field type {kind!r}")


def _is_time(text: str) -> bool:
    m = _TIME_RE.fullmatch(text)
    if not m:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    # Go checks the ranges too (month 13, February 30, hour 24); year 0 as datetime refuses
    # it (arithmetic, not the datetime module: 0.5 MiB of every verify's memory).
    if not (year >= 1 and 1 <= month <= 12 and hour < 24 and minute < 60 and second < 60):
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= (29 if month == 2 and leap else _DAYS[month - 1]):
        return False
    zone = m.group(9), m.group(10)
    return zone == (None, None) or (int(zone[0]) < 24 and int(zone[1]) < 60)


def _check_keys(obj: _Object, kind: Struct, where: str) -> None:
    if len(obj.written) == len(obj) and kind.fields.keys() >= obj.keys():
        return  # no key twice, each spelled as its field: nothing Go could fold together
    folded_fields = kind.folded
    seen: dict[str, str] = {}
    for key in obj.written:
        folded = key.casefold()
        if folded in seen:
            raise StrictJSONError(f"duplicate key {key!r} (as {seen[folded]!r})")
        seen[folded] = key
        field = folded_fields.get(folded)
        if field is not None and key != field:
            raise StrictJSONError(f"key {key!r} is read as {field!r} by Go, not by Python")


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


def object_or_empty(value: object) -> dict:
    """`value` if it is a JSON object, else an empty one (the caller reports what is absent)."""
    return value if isinstance(value, dict) else {}
