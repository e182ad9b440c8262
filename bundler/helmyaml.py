"""YAML read the way Helm reads a chart's values: go-yaml v2's resolution, then JSON.

Helm reads values with sigs.k8s.io/yaml (v1.6.0 in Helm 4.2): go.yaml.in/yaml/v2 (v2.4.2)
decodes the YAML, non-string keys are turned into text, the result goes through
encoding/json, and JSON gives back every number as a float64. A template then prints a value
with fmt's %v. So what a chart deploys follows Go's rules, not YAML 1.1's as PyYAML applies
them: `1:20` is text (PyYAML: the base-60 integer 80), `yes` is true, `1.10` is the float64 1.1,
`20260101` prints as 2.0260101e+07.

PyYAML only parses here (libyaml's events when it has them); composing and resolving are done
below, in time linear in the input: no base-60 arithmetic, no int() of thousands of digits.
Citations name files of go.yaml.in/yaml/v2 v2.4.2 (resolve.go, decode.go), sigs.k8s.io/yaml
v1.6.0 (yaml.go) and Go's strconv (atoi.go, atof.go, ftoa.go).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import math
import re
import struct
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext

from bundler.text import shown

STR = "tag:yaml.org,2002:str"
BINARY = "tag:yaml.org,2002:binary"
MERGE = "tag:yaml.org,2002:merge"
_RESOLVABLE = {STR, "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
               "tag:yaml.org,2002:float", "tag:yaml.org,2002:null",
               "tag:yaml.org,2002:timestamp"}  # resolve.go resolvableTag


class HelmYAMLError(ValueError):
    """YAML Helm would refuse, or that is past a bound; `line` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class HelmNumber(float):
    """A YAML number as Helm's values hold it: a float64 (JSON has no other number), with the
    YAML text and the number go-yaml read before JSON (`go`: an int or a float)."""

    go: int | float
    written: str

    def __new__(cls, go: int | float, written: str) -> HelmNumber:
        self = super().__new__(cls, go)  # int -> float rounds to nearest even, as JSON does
        self.go, self.written = go, written
        return self


# ---- plain scalars: resolve.go resolve() -----------------------------------------------------

# resolve.go resolveMap: the exact spellings, looked up only when the first character's hint
# (resolveTable) is a sign, a digit, '.', or one of yYnNtTfFoO~ (so `<<` stays text).
_WORDS: dict[str, object] = {}
for _value, _words in ((True, "y Y yes Yes YES true True TRUE on On ON"),
                       (False, "n N no No NO false False FALSE off Off OFF"),
                       (None, "~ null Null NULL"),
                       (math.nan, ".nan .NaN .NAN"),
                       (math.inf, ".inf .Inf .INF +.inf +.Inf +.INF"),
                       (-math.inf, "-.inf -.Inf -.INF")):
    for _word in _words.split():
        _WORDS[_word] = _value
_HINTED = frozenset("+-0123456789.yYnNtTfFoO~")
# resolve.go yamlStyleFloat (Go's $ is end of text, as fullmatch)
_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DIGITS = {2: re.compile("[01]*"), 8: re.compile("[0-7]*"), 10: re.compile("[0-9]*"),
           16: re.compile("[0-9a-fA-F]*")}
_MAX_DIGITS = {2: 64, 8: 22, 10: 20, 16: 16}  # significant digits of 2**64 - 1
_INT64 = 1 << 63
_UINT64 = 1 << 64


def resolve_plain(text: str) -> object:
    """What go-yaml v2 makes of an untagged plain scalar: None, a bool, an int (int64 or
    uint64), a float, or the text itself. Time is linear in len(text)."""
    if text == "":
        return None  # resolveMap[""]: the 'N' hint of an empty value
    if text[0] not in _HINTED:
        return text
    if text in _WORDS:
        return _WORDS[text]
    if text[0] in "yYnNtTfFoO~":
        return text
    if text[0] == ".":
        value = _parse_float(text)  # ParseFloat(in, 64): underscores as Go allows them
        return text if value is None else value
    # 'D' and 'S': a timestamp (YYYY-...) would come back as this same text (decode.go keeps a
    # timestamp-like value as a string in an interface{}); it is never a number either.
    plain = text.replace("_", "")
    if len(plain) < 19 and plain.isdigit() and plain.isascii() and plain[0] != "0":
        return int(plain)  # the common case, fast: a decimal well inside int64
    number = _parse_int(plain)
    if number is not None:
        return number
    if _YAML_FLOAT.fullmatch(plain):
        value = _parse_float(plain)
        if value is not None:
            return value
    # The 0b / -0b fallbacks after this in resolve.go parse what ParseInt(plain, 0, 64)
    # already parsed (base 0 takes 0b since Go 1.13), so they never add a number.
    return text


def _parse_int(plain: str) -> int | None:
    """strconv.ParseInt(plain, 0, 64), else ParseUint(plain, 0, 64) (atoi.go)."""
    body, negative = plain, False
    if body[:1] in ("+", "-"):
        negative, body = body[0] == "-", body[1:]
    if not body:
        return None
    base, digits = 10, body
    if body[0] == "0":  # ParseUint's base 0: 0b 0o 0x need a digit after them
        prefix = body[1:2].lower()
        if len(body) >= 3 and prefix in ("b", "o", "x"):
            base, digits = {"b": 2, "o": 8, "x": 16}[prefix], body[2:]
        else:
            base, digits = 8, body[1:]  # "0" alone is 0: no digits left, no error
    if not _DIGITS[base].fullmatch(digits):
        return None
    significant = digits.lstrip("0")
    if len(significant) > _MAX_DIGITS[base]:
        return None  # out of range for uint64 too, decided without converting
    n = int(significant or "0", base)
    if negative:
        return -n if n <= _INT64 else None
    if n < _INT64:
        return n
    if plain[0] != "+" and n < _UINT64:
        return n  # ParseUint takes no sign
    return None


def _underscore_ok(s: str) -> bool:
    """strconv's underscoreOK: each '_' between digits (or a base prefix and a digit)."""
    saw, i = "^", 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexadecimal = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexadecimal = 2, "0", s[1].lower() == "x"
    for c in s[i:]:
        if c.isascii() and (c.isdigit() or hexadecimal and c.lower() in "abcdef"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


_GO_FLOAT = re.compile(r"([+-]?)([0-9_]*)(?:\.([0-9_]*))?(?:[eE]([+-]?)([0-9][0-9_]*))?")


def _parse_float(s: str) -> float | None:
    """strconv.ParseFloat(s, 64) for decimal text (atof.go readFloat); None where Go gives an
    error: bad syntax, or out of range (±Inf with ErrRange)."""
    m = _GO_FLOAT.fullmatch(s)
    if not m:
        return None
    sign, whole, frac, esign, exp = m.groups()
    if not re.search("[0-9]", whole + (frac or "")):
        return None  # readFloat: no digits
    if "_" in s and not _underscore_ok(s):
        return None
    # readFloat stops adding exponent digits once the exponent reaches 10000.
    e = 0
    for c in (exp or "").replace("_", ""):
        if e >= 10000:
            break
        e = e * 10 + ord(c) - 48
    mantissa = whole.replace("_", "") + "." + (frac or "").replace("_", "")
    # ParseFloat rounds to nearest even ("IEEE754 unbiased rounding"), as float() does.
    value = float(f"{sign}{mantissa}e{esign or ''}{e}")
    return None if math.isinf(value) else value


# A subset of http://yaml.org/type/timestamp.html: resolve.go allowedTimestampFormats, as
# time.Parse reads them (1 or 2 digit month, day, hour, minute, second; 4 digit year).
_TIMESTAMP = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?:"
                        r"[Tt]([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(\.[0-9]+)?"
                        r"(?:Z|[+-][0-9]{2}:[0-9]{2})"
                        r"| ([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(\.[0-9]+)?)?")


def _is_timestamp(text: str) -> bool:
    m = _TIMESTAMP.fullmatch(text)
    if not m:
        return False
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    if not 1 <= month <= 12 or not 1 <= day <= days[month - 1]:
        return False
    clock = [int(x) for x in (m[4], m[5], m[6]) if x] or [int(x) for x in (m[8], m[9], m[10])
                                                         if x]
    return not clock or (clock[0] < 24 and clock[1] < 60 and clock[2] < 60)


def resolve_tagged(tag: str, text: str) -> object:
    """A scalar with an explicit tag (resolve.go resolve() and its deferred check, decode.go
    scalar()): a tag that does not fit the value is an error, !!float takes an integer."""
    if tag == BINARY:
        try:
            data = base64.b64decode(text.replace("\n", "").replace("\r", ""), validate=True)
        except (binascii.Error, ValueError):
            raise HelmYAMLError("!!binary value contains invalid base64 data") from None
        # encoding/json writes each invalid UTF-8 byte as U+FFFD
        return data.decode("utf-8", "bundler-go-replace")
    if tag not in _RESOLVABLE:
        return text  # !foo, !: go-yaml keeps the text
    if tag == STR:
        return text
    if tag.endswith(":timestamp"):
        if _is_timestamp(text):
            return text
        value: object = resolve_plain(text)
    else:
        value = resolve_plain(text)
    kind = _kind(value)
    want = tag.rsplit(":", 1)[1]
    if kind == want:
        return value
    if want == "float" and kind == "int" and -_INT64 <= value < _INT64:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    raise HelmYAMLError(f"cannot decode !!{kind} {shown(text, quote=True, limit=24)} as a !!{want}")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def _go_replace(error: UnicodeError) -> tuple[str, int]:
    return "\ufffd", error.start + 1  # type: ignore[attr-defined]


codecs.register_error("bundler-go-replace", _go_replace)


# ---- Go's float formatting --------------------------------------------------------------------


def go_format(value: float, bits: int = 64) -> str:
    """strconv.FormatFloat(value, 'g', -1, bits): what a Go template prints for a float64
    (text/template's printValue calls fmt.Fprint, and fmt's %v of a float is 'g' with precision
    -1; bits 64), and what sigs.k8s.io/yaml makes of a float key (bits 32)."""
    if math.isnan(value):
        return "NaN"
    if bits == 32:
        value = _to_float32(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    negative = math.copysign(1.0, value) < 0
    if value == 0:
        digits, dp = "", 0
    elif bits == 32:
        digits, dp = _shortest(abs(value), 32)
    else:
        digits, dp = _repr_digits(abs(value))
    sign = "-" if negative else ""
    exp = dp - 1
    # ftoa.go formatDigits: %e when exp < -4 or exp >= eprec, and eprec is 6 for shortest.
    if digits and (exp < -4 or exp >= 6):
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    whole = digits[:dp] + "0" * (dp - len(digits)) if dp > 0 else "0"
    frac = "".join(digits[j] if 0 <= j < len(digits) else "0" for j in range(dp, len(digits)))
    return f"{sign}{whole}{'.' + frac if frac else ''}"


def _repr_digits(value: float) -> tuple[str, int]:
    """The shortest digits that read back as `value` (repr's, as Go's shortest formatting),
    and the decimal point's place: value = 0.DIGITS * 10**dp."""
    text = repr(value)
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    raw = whole + frac
    stripped = raw.lstrip("0")
    dp = len(whole) + int(exp or 0) - (len(raw) - len(stripped))
    return stripped.rstrip("0"), dp


def _to_float32(value: float) -> float:
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:  # past float32's range: Go's float32() conversion gives ±Inf
        return math.copysign(math.inf, value)


def _shortest(value: float, bits: int) -> tuple[str, int]:
    """The shortest digits inside value's rounding interval (ends included when the
    mantissa is even), the nearest of them when several: ftoa.go's shortest mode."""
    if bits == 32:
        word = struct.unpack("<I", struct.pack("<f", value))[0]
        below = struct.unpack("<f", struct.pack("<I", word - 1))[0] if word else 0.0
        above = struct.unpack("<f", struct.pack("<I", word + 1))[0]
        even = word % 2 == 0
    else:
        word = struct.unpack("<Q", struct.pack("<d", value))[0]
        below, above = math.nextafter(value, 0.0), math.nextafter(value, math.inf)
        even = word % 2 == 0
    with localcontext() as ctx:
        ctx.prec = 1200
        exact = Decimal(value)
        if math.isinf(above):
            above_d = exact + (exact - Decimal(below))
        else:
            above_d = Decimal(above)
        low, high = (exact + Decimal(below)) / 2, (exact + above_d) / 2
        top = exact.adjusted()
        for places in range(1, 18):
            quantum = Decimal(1).scaleb(top - places + 1)
            found = []
            for rounding in (ROUND_FLOOR, ROUND_CEILING):
                c = exact.quantize(quantum, rounding=rounding)
                if low < c < high or even and c in (low, high):
                    found.append(c)
            if found:
                # the nearest; of two as near, the even one (decimal.go Round)
                best = min(found, key=lambda c: (abs(c - exact), int(c / quantum) % 2))
                _, digit_tuple, exponent = best.normalize().as_tuple()
                digits = "".join(map(str, digit_tuple))
                return digits, len(digits) + int(exponent)
    raise AssertionError("a float has a 17-digit form")  # pragma: no cover


# ---- composing: decode.go's parser and decoder ------------------------------------------------


class _Scalar:
    __slots__ = ("value", "tag", "plain", "line")

    def __init__(self, value: str, tag: str | None, plain: bool, line: int) -> None:
        self.value, self.tag, self.plain, self.line = value, tag, plain, line


class _Alias:
    __slots__ = ("target", "line")

    def __init__(self, target: object, line: int) -> None:
        self.target, self.line = target, line


class _Mapping(list):
    __slots__ = ("line",)


class _Sequence(list):
    __slots__ = ("line",)


_SURROGATE = re.compile("[\ud800-\udfff]")


def load(text: str, max_nodes: int, max_depth: int) -> object:
    """The first and only document of `text` as Helm's values hold it: dicts with text keys,
    lists, str, bool, None and HelmNumber. More than max_nodes nodes (in the text, or built,
    each use of an alias counted) or more than max_depth levels raise HelmYAMLError."""
    root = _compose(text, max_nodes, max_depth)
    return _Decoder(max_nodes, max_depth).value(root, 0)


def _events(text: str):  # noqa: ANN202 - an iterator of PyYAML events
    try:
        from yaml.cyaml import CParser

        parser = CParser(text)
    except ImportError:  # no libyaml: the pure-Python parser gives the same events
        from yaml.parser import Parser
        from yaml.reader import Reader
        from yaml.scanner import Scanner

        class _Pure(Reader, Scanner, Parser):
            def __init__(self, stream: str) -> None:
                Reader.__init__(self, stream)
                Scanner.__init__(self)
                Parser.__init__(self)

        parser = _Pure(text)
    while True:
        event = parser.get_event()
        yield event
        if type(event).__name__ == "StreamEndEvent":
            return


def _compose(text: str, max_nodes: int, max_depth: int) -> object:
    """The node tree of the first document (None for none). An anchor may be defined again
    (the later one wins, decode.go parser.anchor); an alias names one already seen."""
    import yaml

    anchors: dict[str, object] = {}
    stack: list[list] = []  # the open collections
    nodes, root, documents = 0, None, 0
    for event in _events(text):
        kind = type(event).__name__
        line = event.start_mark.line + 1
        if kind == "DocumentStartEvent":
            documents += 1
            if documents > 1:
                raise HelmYAMLError("more than one YAML document (Helm 3 reads only the first, "
                                    "Helm 4 merges them); refused", line)
            continue
        if kind in ("StreamStartEvent", "DocumentEndEvent", "StreamEndEvent"):
            continue
        if kind in ("MappingEndEvent", "SequenceEndEvent"):
            node = stack.pop()
        else:
            nodes += 1
            if nodes > max_nodes:
                raise HelmYAMLError(f"more than {max_nodes} values, counting each use of an "
                                    "alias; refused")
            if isinstance(event, yaml.AliasEvent):
                if event.anchor not in anchors:
                    raise HelmYAMLError(f"unknown anchor {event.anchor!r} referenced", line)
                node = _Alias(anchors[event.anchor], line)
            elif isinstance(event, yaml.ScalarEvent):
                if not event.value.isascii() and _SURROGATE.search(event.value):
                    raise HelmYAMLError("found invalid Unicode character escape code", line)
                node = _Scalar(event.value, event.tag, event.implicit[0], line)
            else:
                node = _Mapping() if isinstance(event, yaml.MappingStartEvent) else _Sequence()
                node.line = line
            if getattr(event, "anchor", None) is not None and not isinstance(event,
                                                                              yaml.AliasEvent):
                anchors[event.anchor] = node
            if isinstance(node, (_Mapping, _Sequence)):
                if len(stack) >= max_depth:
                    raise HelmYAMLError(f"nested more than {max_depth} levels deep; refused",
                                        line)
                stack.append(node)
                continue
        if not stack:
            root = node
        else:
            stack[-1].append(node)
    return root


class _Decoder:
    """decode.go's decoder into interface{}, then sigs.k8s.io/yaml's convertToJSONableObject
    and the JSON round trip, in one pass; each node built counts against the budget."""

    def __init__(self, max_nodes: int, max_depth: int) -> None:
        self.budget, self.max_nodes, self.max_depth = max_nodes, max_nodes, max_depth

    def value(self, node: object, depth: int) -> object:
        go = self.go(node, depth)
        return self.jsonable(go, node)

    def go(self, node: object, depth: int) -> object:
        """The Go value go-yaml gives (dicts keyed by _GoKey, before JSON)."""
        self.count(getattr(node, "line", None), depth)
        while isinstance(node, _Alias):
            node = node.target
        if isinstance(node, _Scalar):
            return _scalar(node)
        if isinstance(node, _Sequence):
            return [self.value(child, depth + 1) for child in node]
        if isinstance(node, _Mapping):
            pairs: dict[object, tuple[object, object]] = {}
            self.fill(node, pairs, depth)
            return self.keys_as_text(pairs, node.line)
        return None  # an empty document

    def count(self, line: int | None, depth: int) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise HelmYAMLError(f"more than {self.max_nodes} values, counting each use of an "
                                "alias; refused")
        if depth > self.max_depth:  # an alias inside its own anchor ends here too
            raise HelmYAMLError(f"nested more than {self.max_depth} levels deep; refused", line)

    def fill(self, node: _Mapping, pairs: dict, depth: int) -> None:
        """decode.go mapping(): pairs in order, a merge applied where it stands (so keys
        before a `<<` are overridden by it, keys after it override it)."""
        for i in range(0, len(node), 2):
            key_node, value_node = node[i], node[i + 1]
            if (isinstance(key_node, _Scalar) and key_node.value == "<<"
                    and (key_node.plain or key_node.tag == MERGE)):
                self.merge(value_node, pairs, depth)
                continue
            key = self.go(key_node, depth + 1)
            if isinstance(key, (dict, list)):
                raise HelmYAMLError("invalid map key: a mapping or a sequence",
                                    getattr(key_node, "line", None))
            pairs[_GoKey(key)] = (key, self.value(value_node, depth + 1))

    def merge(self, node: object, pairs: dict, depth: int) -> None:
        """decode.go merge(): a mapping, an alias of one, or a sequence of those taken last to
        first (so earlier ones win); an alias of a sequence is refused, as go-yaml does."""
        items = list(reversed(node)) if isinstance(node, _Sequence) else [node]
        for item in items:
            target = item.target if isinstance(item, _Alias) else item
            if not isinstance(target, _Mapping):
                raise HelmYAMLError("map merge requires map or sequence of maps as the value",
                                    getattr(item, "line", None))
            self.count(target.line, depth + 1)
            self.fill(target, pairs, depth + 1)

    def keys_as_text(self, pairs: dict, line: int) -> dict[str, object]:
        """sigs.k8s.io/yaml convertToJSONableObject: keys as text; Go map order is random, so
        two keys that become the same text are refused (Helm would keep either)."""
        out: dict[str, object] = {}
        for key, value in pairs.values():
            if isinstance(key, str):
                text = key
            elif isinstance(key, bool):
                text = "true" if key else "false"
            elif isinstance(key, int) and -_INT64 <= key < _INT64:
                text = str(key)
            elif isinstance(key, float):
                text = go_format(key, 32)
                text = {"+Inf": ".inf", "-Inf": "-.inf", "NaN": ".nan"}.get(text, text)
            else:
                kind = "<nil>" if key is None else "uint64"
                raise HelmYAMLError(f"unsupported map key of type: {kind}", line)
            if text in out:
                raise HelmYAMLError(f"key {text!r} appears twice once keys are text (Helm "
                                    "would keep either value); refused", line)
            out[text] = value
        return out

    @staticmethod
    def jsonable(go: object, node: object) -> object:
        """encoding/json: numbers come back as float64; NaN and ±Inf cannot be written."""
        if isinstance(go, bool) or go is None or isinstance(go, (str, dict, list)):
            return go
        if isinstance(go, float) and not math.isfinite(go):
            raise HelmYAMLError(f"json: unsupported value: {go_format(go)} (Helm cannot read "
                                "it)", getattr(node, "line", None))
        while isinstance(node, _Alias):
            node = node.target
        return HelmNumber(go, node.value)  # type: ignore[arg-type, union-attr]


class _GoKey:
    """A Go interface{} map key: equal when type and value are (1 and "1" differ; 1.0 and 1
    too; every NaN is its own key)."""

    __slots__ = ("kind", "value")

    def __init__(self, value: object) -> None:
        self.kind, self.value = _kind(value), value

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, _GoKey) and self.kind == other.kind
                and self.value == other.value)

    def __hash__(self) -> int:
        return hash((self.kind, self.value))


def _scalar(node: _Scalar) -> object:
    """decode.go scalar(): a quoted untagged scalar is text; a plain one is resolved."""
    if node.tag is None:
        return resolve_plain(node.value) if node.plain else node.value
    try:
        return resolve_tagged(node.tag, node.value)
    except HelmYAMLError as e:
        raise HelmYAMLError(str(e), node.line) from None
