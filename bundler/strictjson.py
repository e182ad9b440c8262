"""JSON from untrusted places (bundles, registries), read as Go reads it, or refused.

containerd reads index.json, manifests and configs with Go's encoding/json. Wherever Python's
json module and Go's could read the same bytes differently, verify could approve one document
while containerd imports another, so those inputs are refused instead:
- Go matches object keys to struct fields case-insensitively, with Unicode folding
  (`"Digest"`, `"ſize"` and `"size"` are one field to Go, three to Python) and keeps the last
  duplicate: keys equal under case folding are refused, and so are keys that fold to a field
  name of the image specs without being spelled exactly as the specs spell it;
- lone UTF-16 surrogates (`"\\ud800"`, or the raw bytes) become U+FFFD in Go and stay in Python;
- a byte-order mark, NaN and Infinity are errors to Go and accepted by Python;
- numbers Go stores in int64 (sizes) overflow past 2^63-1;
- nesting deep enough to exhaust Python's recursion ends in RecursionError, not a message.
"""

from __future__ import annotations

import json

# Field names of the OCI image spec, Docker's manifest v2 and `docker save`, as their Go
# structs spell them; a key that case-folds to one of these must be spelled the same way.
_FIELDS = (
    "schemaVersion", "mediaType", "artifactType", "config", "layers", "manifests", "subject",
    "annotations", "digest", "size", "urls", "platform", "data", "architecture", "os",
    "os.version", "os.features", "variant", "features", "rootfs", "type", "diff_ids",
    "history", "created", "author", "imageLayoutVersion",
    "Config", "RepoTags", "Layers", "Parent", "LayerSources",
)
_SPELLINGS: dict[str, set[str]] = {}
for _name in _FIELDS:
    _SPELLINGS.setdefault(_name.casefold(), set()).add(_name)

MAX_INT = (1 << 63) - 1
_BOM = b"\xef\xbb\xbf"


class StrictJSONError(ValueError):
    """The bytes are not JSON that Go and Python read alike; the message says why."""


def loads(data: bytes) -> object:
    """Parse `data` (UTF-8 JSON), refusing what Go's encoding/json would read differently."""
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
    return doc


def _object(pairs: list[tuple[str, object]]) -> dict:
    seen: dict[str, str] = {}
    for key, _ in pairs:
        folded = key.casefold()
        if folded in seen:
            raise StrictJSONError(f"duplicate key {key!r} (as {seen[folded]!r})")
        seen[folded] = key
        spellings = _SPELLINGS.get(folded)
        if spellings and key not in spellings:
            raise StrictJSONError(f"key {key!r} is not spelled as the spec spells it "
                                  f"({' or '.join(sorted(spellings))})")
    return dict(pairs)


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
