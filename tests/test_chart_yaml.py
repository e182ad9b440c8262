"""Values read as Helm reads them (bundler.helmyaml), and charts that try to make that slow.

Every expected value below comes from the Go sources Helm reads values with: go.yaml.in/yaml/v2
v2.4.2 (resolve.go, decode.go), sigs.k8s.io/yaml v1.6.0 (yaml.go) and Go's strconv (atoi.go,
atof.go, ftoa.go); the comment beside each case names the rule.
"""

from __future__ import annotations

import io
import math
import tarfile
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bundler import chart, helmyaml
from bundler.chart import ChartError
from tests.cli_helpers import assert_one_line_error, bundler
from tests.test_chart import BUSYBOX, make_chart

INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1


@pytest.mark.parametrize("text, expected", [
    # resolve.go: "Base 60 floats are a bad idea ... purposefully unsupported": text
    ("1:20", "1:20"),
    ("1:59:59", "1:59:59"),
    # resolve.go 'D' hint: ParseInt(plain, 0, 64), then yamlStyleFloat + ParseFloat
    ("1.10", 1.1),
    ("20260101", 20260101),
    ("1.", 1.0),
    ("0.", 0.0),
    ("-0", 0),
    ("-0.0", -0.0),
    ("1e5", 100000.0),
    ("1E+5", 100000.0),
    ("1e-400", 0.0),  # atof.go: underflow is no error
    ("1e400", "1e400"),  # atof.go: overflow is ErrRange, so resolve.go keeps the text
    # resolve.go: strings.Replace(in, "_", "", -1) before ParseInt
    ("1_000", 1000),
    ("1__2", 12),
    ("1_", 1),
    ("0x1_F", 31),
    ("1e5_0", 1e50),
    ("_1", "_1"),  # resolveTable has no hint for '_': text
    # atoi.go ParseUint base 0: 0b 0o 0x (either case) with a digit after; a lone 0 is octal
    ("0x1F", 31),
    ("0X1f", 31),
    ("0o17", 15),
    ("0O17", 15),
    ("017", 15),
    ("0b101", 5),
    ("0B11", 3),
    ("-0b101", -5),
    ("+0x10", 16),
    ("0", 0),
    ("00", 0),
    ("08", 8.0),  # not octal, but yamlStyleFloat: ParseFloat gives 8
    ("0x", "0x"),  # atoi.go: len(s) >= 3 for a prefix, and 'x' is no octal digit
    ("0b2", "0b2"),
    ("0x1p4", "0x1p4"),  # yamlStyleFloat takes no hex floats
    # atoi.go ParseInt: int64; ParseUint: uint64, no sign; then float64
    (str(INT64_MAX), INT64_MAX),
    (str(-INT64_MAX - 1), -INT64_MAX - 1),
    (str(INT64_MAX + 1), INT64_MAX + 1),
    (str(UINT64_MAX), UINT64_MAX),
    (str(UINT64_MAX + 1), float(UINT64_MAX + 1)),
    ("+" + str(INT64_MAX + 1), float(INT64_MAX + 1)),
    (str(-INT64_MAX - 2), float(-INT64_MAX - 2)),
    ("9" * 400, "9" * 400),  # past float64: ErrRange, text
    ("0" * 5000 + "7", 7),  # octal, many leading zeros: still small
    ("1" * 5000, "1" * 5000),
    # resolve.go '.' hint: resolveMap, then ParseFloat(in) as is: atof.go underscoreOK
    (".5", 0.5),
    (".5_5", 0.55),
    ("._5", "._5"),
    (".5_", ".5_"),
    (".", "."),
    (".e5", ".e5"),
    # resolve.go resolveMap: YAML 1.1 booleans and nulls, exactly these spellings
    ("y", True), ("Y", True), ("yes", True), ("Yes", True), ("YES", True),
    ("true", True), ("True", True), ("TRUE", True), ("on", True), ("On", True), ("ON", True),
    ("n", False), ("N", False), ("no", False), ("No", False), ("NO", False),
    ("false", False), ("False", False), ("FALSE", False),
    ("off", False), ("Off", False), ("OFF", False),
    ("yES", "yES"), ("nO", "nO"), ("oN", "oN"), ("tRUE", "tRUE"),
    ("", None), ("~", None), ("null", None), ("Null", None), ("NULL", None),
    ("nULL", "nULL"), ("none", "none"),
    (".inf", math.inf), (".Inf", math.inf), ("+.INF", math.inf), ("-.inf", -math.inf),
    (".NaN", "nan"),
    (".nAn", ".nAn"),
    # resolve.go: '<' has no hint, so `<<` is text except as a mapping key (decode.go isMerge)
    ("<<", "<<"),
    # decode.go scalar(): a timestamp-like value into interface{} stays the string
    ("2001-12-14", "2001-12-14"),
    ("2001-12-14t21:59:43.10-05:00", "2001-12-14t21:59:43.10-05:00"),
    # resolveTable is indexed by the first byte: other digits are text
    ("\u0663", "\u0663"),
    ("1\u0663", "1\u0663"),
    ("v1.36.1", "v1.36.1"),
    ("1.36.1", "1.36.1"),
])
def test_plain_scalars_resolve_as_go_yaml_v2(text, expected):
    got = helmyaml.resolve_plain(text)
    if expected == "nan":
        assert isinstance(got, float) and math.isnan(got)
        return
    assert got == expected and type(got) is type(expected), (text, got)
    if isinstance(expected, float):  # -0.0 keeps its sign
        assert math.copysign(1, got) == math.copysign(1, expected)


@pytest.mark.parametrize("value, printed", [
    # ftoa.go formatDigits: shortest digits; %e when the exponent is < -4 or >= 6 (eprec = 6
    # for the shortest form); fmt's %v, which text/template uses, is FormatFloat 'g' -1
    (1.1, "1.1"),
    (1.0, "1"),
    (100.0, "100"),
    (123456.0, "123456"),
    (1e6, "1e+06"),
    (20260101.0, "2.0260101e+07"),
    (1234567.0, "1.234567e+06"),
    (1e21, "1e+21"),
    (1.5e300, "1.5e+300"),
    (0.0001, "0.0001"),
    (0.00001, "1e-05"),
    (0.000123, "0.000123"),
    (5e-324, "5e-324"),
    (0.0, "0"),
    (-0.0, "-0"),
    (-2.5, "-2.5"),
    (float(UINT64_MAX), "1.8446744073709552e+19"),
])
def test_go_prints_a_float64(value, printed):
    assert helmyaml.go_format(value) == printed


@pytest.mark.parametrize("value, printed", [
    # sigs.k8s.io/yaml yaml.go: a float key is FormatFloat(k, 'g', -1, 32)
    (1.5, "1.5"),
    (0.1, "0.1"),
    (20260101.0, "2.02601e+07"),
    (16777217.0, "1.6777216e+07"),  # float32 has 24 bits
    (3.4028235e38, "3.4028235e+38"),
    (1e39, "+Inf"),  # past float32: Go's float32() conversion gives +Inf
    (1e-46, "0"),
])
def test_go_prints_a_float32(value, printed):
    assert helmyaml.go_format(value, 32) == printed


def values(text: str) -> dict:
    return chart.parse_yaml(text.encode(), "v.yaml")


@pytest.mark.parametrize("text, expected", [
    # JSON gives every number back as a float64 (sigs.k8s.io/yaml Unmarshal, "This decodes
    # any number ... into a float64"); quoting keeps text
    ("x: 1\n", {"x": 1.0}),
    ("x: '1.10'\n", {"x": "1.10"}),
    ('x: "yes"\n', {"x": "yes"}),
    ("x: yes\n", {"x": True}),
    ("x:\n", {"x": None}),
    # yaml.go convertToJSONableObject: keys as text; bool, int, float32-'g' keys
    ("y: 1\n", {"true": 1.0}),
    ("off: 1\n", {"false": 1.0}),
    ("1: a\n", {"1": "a"}),
    ("0x10: a\n", {"16": "a"}),
    ("1.5: a\n", {"1.5": "a"}),
    ("1.0: a\n", {"1": "a"}),
    (".inf: a\n", {".inf": "a"}),
    ("1:20: a\n", {"1:20": "a"}),
    # decode.go mapping(): a key written twice (same type) keeps the later value
    ("a: 1\na: 2\n", {"a": 2.0}),
    # decode.go merge(): applied where it stands, so it overrides keys before it and keys
    # after it override it; in a list, earlier maps win
    ("b: &b {k: 1, m: 1}\nx: {k: 0, <<: *b, m: 2}\n",
     {"b": {"k": 1.0, "m": 1.0}, "x": {"k": 1.0, "m": 2.0}}),
    ("p: &p {k: p}\nq: &q {k: q, o: q}\nx: {<<: [*p, *q]}\n",
     {"p": {"k": "p"}, "q": {"k": "q", "o": "q"}, "x": {"k": "p", "o": "q"}}),
    ('x: {"<<": {k: 1}}\n', {"x": {"<<": {"k": 1.0}}}),  # quoted: a plain key
    ("x: {!!merge <<: {k: 1}}\n", {"x": {"k": 1.0}}),
    # decode.go parser.anchor(): an anchor defined again, the later one wins
    ("a: &x 1\nb: &x 2\nc: *x\n", {"a": 1.0, "b": 2.0, "c": 2.0}),
    # resolve.go with an explicit tag, decode.go scalar()
    ('x: !!int "0x1F"\n', {"x": 31.0}),
    ("x: !!float 1\n", {"x": 1.0}),
    ("x: !!str 1.10\n", {"x": "1.10"}),
    ("x: !!bool yes\n", {"x": True}),
    ("x: !!null ~\n", {"x": None}),
    ("x: !!timestamp 2001-12-14\n", {"x": "2001-12-14"}),
    ("x: !!binary aGk=\n", {"x": "hi"}),
    ("x: !!binary gA==\n", {"x": "\ufffd"}),  # json: an invalid UTF-8 byte is U+FFFD
    ("x: ! 5\n", {"x": "5"}),  # a non-specific tag: not resolvable, the text
    ("x: !foo 5\n", {"x": "5"}),
    ("", {}),
    ("~\n", {}),
])
def test_documents_read_as_helm(text, expected):
    assert values(text) == expected


def test_numbers_keep_what_the_yaml_wrote():
    got = values("a: 1.10\nb: 0x10\nc: 20260101\n")
    assert [(v.written, v.go) for v in got.values()] == [("1.10", 1.1), ("0x10", 16),
                                                         ("20260101", 20260101)]


@pytest.mark.parametrize("text, message", [
    ("x: !!int 1:20\n", "v.yaml:1: cannot decode !!str '1:20' as a !!int"),
    ("x: !!int 1.5\n", "cannot decode !!float '1.5' as a !!int"),
    ("x: !!null 0\n", "cannot decode !!int '0' as a !!null"),
    ("x: !!float 18446744073709551615\n", "as a !!float"),  # resolve.go: only int, int64
    ("x: !!binary a\n", "invalid base64"),
    ("x: .nan\n", "json: unsupported value: NaN"),  # encoding/json writes no NaN, no Inf
    ("x: [-.inf]\n", "json: unsupported value: -Inf"),
    ("~: 1\n", "v.yaml:1: unsupported map key of type: <nil>"),
    (f"{UINT64_MAX}: 1\n", "unsupported map key of type: uint64"),
    ("1: a\n'1': b\n", "key '1' appears twice once keys are text"),  # Go map order: random
    ("1.0: a\n1: b\n", "key '1' appears twice"),
    ("yes: a\n'true': b\n", "key 'true' appears twice"),
    ("? [1]\n: x\n", "invalid map key"),
    ("x: {<<: 1}\n", "map merge requires map or sequence of maps"),
    ("s: &s [1]\nx: {<<: *s}\n", "map merge requires map or sequence of maps"),
    ("x: {<<: [[1]]}\n", "map merge requires map or sequence of maps"),
    ("x: *nope\n", "v.yaml:1: unknown anchor 'nope' referenced"),
    ('x: "\\ud800"\n', "found invalid Unicode character escape code"),
    ("a: 1\n---\nb: 2\n", "v.yaml:2: more than one YAML document"),
    ("- 1\n", "v.yaml: not a YAML mapping"),
])
def test_yaml_helm_refuses_is_refused_in_one_line(text, message):
    with pytest.raises(ChartError) as info:
        values(text)
    assert message in str(info.value) and "\n" not in str(info.value)


# ---- what reaches the image list -------------------------------------------------------------


def _with_tag(tmp_path: Path, tag: str, **chart_fields: str) -> Path:
    top = make_chart(tmp_path)
    v = top / "values.yaml"
    v.write_text(v.read_text().replace('tag: "1.36.1"', f"tag: {tag}"))
    meta = top / "Chart.yaml"
    for key, value in chart_fields.items():
        meta.write_text("\n".join(f"{key}: {value}" if line.startswith(f"{key}:") else line
                                  for line in meta.read_text().splitlines()) + "\n")
    return top


def _busybox(top: Path) -> str:
    return next(str(i.reference) for i in chart.images(top).images
                if i.path == "dhcpDaemonSet.image")


@pytest.mark.parametrize("tag, image", [
    ("1", f"{BUSYBOX}:1"),  # float64 1 prints "1": as written
    ("1.5", f"{BUSYBOX}:1.5"),  # prints "1.5": as written (before: refused as a float)
    ("'1.10'", f"{BUSYBOX}:1.10"),
    ("v1.36.1", f"{BUSYBOX}:v1.36.1"),
    # Go prints these otherwise, and the pod pulls what Go prints
    ("1.10", f"{BUSYBOX}:1.1"),
    ("0x10", f"{BUSYBOX}:16"),
    ("010", f"{BUSYBOX}:8"),
])
def test_a_number_tag_is_what_helm_prints(tmp_path, tag, image):
    assert _busybox(_with_tag(tmp_path, tag)) == image


@pytest.mark.parametrize("tag, message", [
    # before: 20260101 listed as written, though Helm's template prints 2.0260101e+07
    ("20260101", "dhcpDaemonSet.image: invalid"),
    ("yes", "want text, got true"),
    # before: PyYAML's base-60 integer 80 was listed; Helm prints 1:20, no valid tag
    ("1:20", "dhcpDaemonSet.image: invalid"),
])
def test_a_tag_helm_prints_otherwise_is_refused_naming_it(tmp_path, tag, message):
    top = _with_tag(tmp_path, tag)
    run = bundler("images", "--chart", str(top))
    assert_one_line_error(run, f"{top}: dhcpDaemonSet.image", message)
    assert run.code == 2


def test_enabled_n_is_false_as_in_helm(tmp_path):
    top = _with_tag(tmp_path, '"1.36.1"')
    v = top / "values.yaml"
    v.write_text(v.read_text().replace("thickPlugin:\n  enabled: false",
                                       "thickPlugin:\n  enabled: y"))
    v.write_text(v.read_text() + "extra:\n  enabled: n\n  image:\n    repository: r/x\n"
                 "    tag: v1\n")
    found = {str(i.reference): i.disabled for i in chart.images(top).images}
    assert found["docker.io/r/x:v1"] == "extra.enabled is false"  # PyYAML: "n" is text, on
    assert found["docker.io/rancher/hardened-multus-thick:v4.3.0-build20260722"] is None


def test_chart_yaml_text_fields_as_sigs_yaml_fills_them(tmp_path):
    # yaml.go: a number for a string field is FormatInt, or FormatFloat(f, 'g', -1, 32)
    top = _with_tag(tmp_path, '"1.36.1"', version="1:20", appVersion="1.10")
    v = top / "values.yaml"
    v.write_text(v.read_text().replace("  tag: v4.3.0-build20260722\n  pullPolicy",
                                       "  pullPolicy", 1))
    result = chart.images(top)
    assert result.version == "1:20"  # PyYAML: 80
    assert str(result.images[0].reference).endswith(":1.1")
    meta = top / "Chart.yaml"
    meta.write_text(meta.read_text().replace("appVersion: 1.10",
                                             "appVersion: 0.30000000000000004"))
    assert str(chart.images(top).images[0].reference).endswith(":0.3")  # float32's shortest


# ---- hostile charts: fast, and one line with exit 2 ------------------------------------------


def _tgz(tmp_path: Path, values_text: str) -> Path:
    """A chart .tgz whose values.yaml is values_text (gzip makes repetition tiny)."""
    meta = b"apiVersion: v2\nname: x\nversion: 1.0.0\n"
    dest = tmp_path / "hostile.tgz"
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in (("x/Chart.yaml", meta), ("x/values.yaml", values_text.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


BASE60 = "1" + ":59" * ((chart.MAX_YAML - 64) // 3)  # PyYAML: one big multiply per ':59'


def test_base_60_chart_of_a_few_kb_is_read_fast(tmp_path):
    tgz = _tgz(tmp_path, f"image:\n  repository: r/x\n  tag: {BASE60}\n")
    assert tgz.stat().st_size < 8 << 10
    started = time.monotonic()
    run = bundler("images", "--chart", str(tgz), timeout=60)  # PyYAML: ~100 s
    assert_one_line_error(run, f"{tgz}: image: ")
    assert run.code == 2 and time.monotonic() - started < 30
    # as text that is no tag, as Helm would render it; elsewhere it is just text
    started = time.monotonic()
    assert chart.parse_yaml(f"x: {BASE60}\n".encode(), "v.yaml") == {"x": BASE60}
    assert time.monotonic() - started < 5


def test_base_60_values_file_of_2_mib_is_read_fast(tmp_path):
    top = make_chart(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_text(f"dhcpDaemonSet:\n  image:\n    tag: {BASE60[:-21]}\n")
    assert big.stat().st_size > 2_000_000
    started = time.monotonic()
    run = bundler("images", "--chart", str(top), "--values", str(big), timeout=60)
    assert_one_line_error(run, f"{top}: dhcpDaemonSet.image: ")
    assert run.code == 2 and time.monotonic() - started < 30


@pytest.mark.parametrize("digits", [4301, 100_000])
def test_integers_past_4300_digits_are_text_as_in_go(tmp_path, digits):
    # Before: ValueError (Python's int() digit limit), a traceback and exit 1, which --check
    # uses for drift. ParseInt and ParseFloat both fail on them: Go keeps the text.
    tgz = _tgz(tmp_path, f"image:\n  repository: r/x\n  tag: {'9' * digits}\n"
                         f"other: {'7' * digits}\n")
    listing = tmp_path / "images.txt"
    listing.write_text("docker.io/r/x:v1\n")
    run = bundler("images", "--chart", str(tgz), "--check", str(listing), timeout=60)
    assert_one_line_error(run, f"{tgz}: image: ")
    assert run.code == 2
    assert chart.parse_yaml(f"x: {'7' * digits}\n".encode(), "v") == {"x": "7" * digits}


def test_merge_keys_that_double_each_level_stop_at_the_value_bound(tmp_path):
    # PyYAML's own merge expansion was exponential here before 6.0.4 (yaml/pyyaml#897); each
    # merged map counts against the bound like each use of an alias.
    lines = ["l0: &l0 {k: v}"]
    lines += [f"l{i}: &l{i} {{<<: [*l{i - 1}, *l{i - 1}], k{i}: v}}" for i in range(1, 30)]
    tgz = _tgz(tmp_path, "\n".join(lines) + "\nx: {<<: [*l29, *l29]}\n")
    started = time.monotonic()
    run = bundler("images", "--chart", str(tgz), timeout=60)
    assert_one_line_error(run, f"{tgz}: values.yaml: more than 500000 values")
    assert run.code == 2 and time.monotonic() - started < 30


# ---- properties ------------------------------------------------------------------------------

NUMERIC = st.text(alphabet="0123456789_.:+-eExXoObB~yYnN", max_size=40)


@settings(max_examples=2000, deadline=200)
@given(st.one_of(NUMERIC, st.text(max_size=40),
                 st.builds(lambda c, n: c * n, st.sampled_from("9:0_."),
                           st.integers(0, 200_000))))
@example("1" + ":59" * 100_000)
@example("0x" + "f" * 100_000)
@example("." + "5" * 100_000 + "e" + "9" * 100_000)
def test_resolving_any_plain_scalar_is_fast_and_total(text):
    got = helmyaml.resolve_plain(text)
    assert got is None or isinstance(got, (bool, int, float, str))
    if isinstance(got, str):
        assert got == text  # never another text
    if isinstance(got, int) and not isinstance(got, bool):
        assert -(1 << 63) <= got < (1 << 64)


@settings(max_examples=500, deadline=None)
@given(st.integers(-(1 << 63), (1 << 64) - 1), st.sampled_from(["d", "x", "o", "b"]),
       st.data())
def test_any_go_integer_written_any_way_resolves_to_it(n, base, data):
    # atoi.go ParseInt/ParseUint base 0; resolve.go drops every '_' first
    digits = {"d": str(abs(n)), "x": f"0x{abs(n):x}", "o": f"0o{abs(n):o}",
              "b": f"0b{abs(n):b}"}[base]
    text = ("-" if n < 0 else "") + digits
    at = data.draw(st.integers(1, len(text)))
    text = text[:at] + "_" * data.draw(st.integers(0, 2)) + text[at:]
    assert helmyaml.resolve_plain(text) == n


@settings(max_examples=1000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_printed_floats_read_back_and_match_the_shortest_digits(x):
    printed = helmyaml.go_format(x)
    assert helmyaml.resolve_plain(printed) == x
    if x != 0:
        assert helmyaml._shortest(abs(x), 64) == helmyaml._repr_digits(abs(x))


@settings(max_examples=300, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=2.0**-100))
def test_float32_keys_print_the_shortest_digits_that_read_back(x):
    printed = helmyaml.go_format(x, 32)
    assert helmyaml._to_float32(float(printed)) == x
    digits = printed.split("e")[0].replace(".", "").replace("-", "").strip("0")
    assert len(digits) <= 9


yaml_ish = st.text(alphabet=st.sampled_from(list("ab1:.-_ \n[]{},&*!<>'\"#|~?yn0x")),
                   max_size=80)


@settings(max_examples=1000, deadline=None)
@given(yaml_ish)
@example("a: &a [*a]\n")
@example("<<: {<<: {<<: 1}}\n")
def test_any_text_gives_a_mapping_or_one_chart_error(text):
    try:
        got = values(text)
    except ChartError as e:
        assert "\n" not in str(e) and str(e).startswith("v.yaml")
    else:
        assert isinstance(got, dict)


@settings(max_examples=1000, deadline=200)
@given(st.sampled_from(sorted(helmyaml._RESOLVABLE) + [helmyaml.BINARY, helmyaml.MERGE, "!",
                                                       "!foo"]),
       st.one_of(NUMERIC, st.text(max_size=40)))
def test_a_tagged_scalar_resolves_or_fails_with_the_one_error_type(tag, text):
    try:
        got = helmyaml.resolve_tagged(tag, text)
    except helmyaml.HelmYAMLError as e:
        assert "\n" not in str(e)
    else:
        assert got is None or isinstance(got, (bool, int, float, str))


def test_without_libyaml_the_pure_python_parser_gives_the_same_values(monkeypatch):
    text = "a: &a {x: 1:20, y: yes, z: 0x10}\nb: {<<: *a, y: '1.10'}\nn: [~, .5, !!str 7]\n"
    with_libyaml = values(text)
    monkeypatch.setitem(__import__("sys").modules, "yaml.cyaml", None)  # import fails
    assert values(text) == with_libyaml == {  # keys y and n are booleans, as text
        "a": {"x": "1:20", "true": True, "z": 16.0},
        "b": {"x": "1:20", "true": "1.10", "z": 16.0}, "false": [None, 0.5, "7"]}
