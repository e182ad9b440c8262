"""Properties of reference.parse, the parser every line of an image list goes through."""

from __future__ import annotations

import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bundler.errors import InputError
from bundler.reference import parse

# distribution/reference's grammar (reference/regexp.go), written out again independently of
# bundler's: ASCII only, lower-case path components, normalized (registry always present).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
_GRAMMAR = re.compile(
    rf"(?:{_HOST}|\[[0-9a-f:]+\])(?::[0-9]+)?/{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io"}

components = st.from_regex(rf"\A{_COMPONENT}\Z", fullmatch=True).filter(lambda c: len(c) < 40)
paths = st.lists(components, min_size=1, max_size=4).map("/".join)
labels = st.from_regex(r"\A[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?\Z", fullmatch=True)
hosts = st.one_of(
    st.lists(labels, min_size=2, max_size=4).map(".".join),
    st.just("localhost"),
    st.sampled_from(sorted(_HUB)),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    # IPv6 literals: the colons inside the brackets make them hosts, as in Docker
    st.from_regex(r"\A\[[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}\]\Z", fullmatch=True),
)
ports = st.one_of(st.none(), st.integers(1, 65535))
tags = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z", fullmatch=True)
digests = st.from_regex(r"\A[0-9a-f]{64}\Z", fullmatch=True).map(lambda h: f"sha256:{h}")


@st.composite
def references(draw):
    """Valid reference text, as people write it, and what each part must become."""
    host = draw(st.one_of(st.none(), hosts))
    port = draw(ports) if host else None
    path = draw(paths)
    first = path.split("/")[0]
    # Docker's rule: a first component with a dot (or `localhost`) before a slash is a host.
    assume(host or "/" not in path or ("." not in first and first != "localhost"))
    tag = draw(st.one_of(st.none(), tags))
    digest = draw(st.one_of(st.none(), digests))
    text = path
    if host:
        text = f"{host}{f':{port}' if port else ''}/{text}"
    text += f":{tag}" if tag else ""
    text += f"@{digest}" if digest else ""
    return text, host, port, path, tag, digest


@settings(max_examples=200, deadline=None)
@given(references())
def test_valid_references_parse_normalize_and_round_trip(case):
    text, host, port, path, tag, digest = case
    try:
        ref = parse(text)
    except InputError as e:
        assert "longer than 255" in str(e)
        return
    registry = f"{host.lower()}:{port}" if host and port else (host or "docker.io").lower()
    if registry in _HUB:
        registry = "docker.io"
    repository = f"library/{path}" if registry == "docker.io" and "/" not in path else path
    assert (ref.registry, ref.repository) == (registry, repository)
    assert (ref.tag, ref.digest) == (tag or (None if digest else "latest"), digest)
    assert parse(str(ref)) == ref
    assert str(parse(str(ref))) == str(ref)
    assert _GRAMMAR.fullmatch(str(ref)), str(ref)


# Text built from the characters references are made of, and the ones that trip parsers up:
# more of it comes near being valid than arbitrary text does.
near = st.text(alphabet="abcz09AZ._-:/@[]\n\t #\x00é\u2028" + "sha256", max_size=80)


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.text(max_size=300), near, references().map(lambda c: c[0] + "\n")))
def test_any_text_is_a_reference_or_an_input_error(text):
    try:
        ref = parse(text)
    except InputError as e:
        message = str(e)
        assert "\n" not in message and len(message) < 400, message
        return
    # Whatever is accepted is a name Docker and containerd accept too, and stable.
    assert _GRAMMAR.fullmatch(str(ref)), (text, str(ref))
    assert parse(str(ref)) == ref


STRAYS = ["\n", " ", "\t", "\x00", "é", "\u2028", "\r"]


@settings(max_examples=150, deadline=None)
@given(references(), st.integers(1, 10_000))
def test_a_stray_character_inside_a_reference_is_refused(case, where):
    text = case[0]
    # Just before a separator is where a `$` that also matches before a newline lets one in;
    # at either end, whitespace is stripped like a blank line's.
    places = {i for i, c in enumerate(text) if c in ":/@" and i > 0}
    places |= {where % len(text)} - {0}
    for i in sorted(places):
        for stray in STRAYS:
            mangled = text[:i] + stray + text[i:]
            try:
                ref = parse(mangled)
            except InputError:
                continue
            raise AssertionError(f"{mangled!r} accepted as {ref}")
