"""registry/body.py against a real HTTP server: caps, resumption by Range, small documents,
error bodies, what a finished response does with its connection, and the rate rule."""

from __future__ import annotations

import pytest

from bundler.errors import NetworkError, RegistryError
from bundler.registry import body, retry
from bundler.registry.endpoint import TLSConfig
from bundler.registry.transport import new_session, send
from tests import hostileserver as hs
from tests.httpreply import cut_off, reply

DATA = bytes(range(256)) * 64  # 16 KiB
QUICK = retry.Policy(attempts=3, base=0.01, cap=0.01)


def _get(session, url: str, headers: dict | None = None):
    return send(session, "GET", url, headers, stream=True, timeout=5)


def test_a_reader_reads_no_more_than_its_limit(hostile):
    server = hostile(lambda h: reply(h, 200, DATA))
    reader = body.BodyReader(_get(new_session(TLSConfig()), server.url + "/b"), "blob x",
                             limit=100)
    assert b"".join(iter(reader.read, b"")) == DATA[:100]
    assert reader.read(0) == b"" and reader.read() == b""


def _resuming(url: str) -> body.BodyReader:
    """A reader of DATA at `url` that resumes by Range, trying QUICK-ly."""
    session = new_session(TLSConfig())
    return body.BodyReader(_get(session, url), "blob x", len(DATA),
                           lambda offset: _get(session, url, {"Range": f"bytes={offset}-"}),
                           QUICK)


def _cut_once_then_whole(asked: list, at: int):
    """A server cutting its first answer off after `at` bytes, then sending the whole body
    whatever was asked; the Range headers it was sent go into `asked`."""
    def behave(h):
        asked.append(h.headers.get("Range"))
        return cut_off(h, DATA, at) if len(asked) == 1 else reply(h, 200, DATA)
    return behave


def test_a_body_cut_off_resumes_by_range_from_the_byte_it_reached(hostile):
    asked: list[str | None] = []

    def behave(h):
        asked.append(h.headers.get("Range"))
        if len(asked) == 1:
            return cut_off(h, DATA, 5000)
        start = int(asked[-1].removeprefix("bytes=").split("-")[0])
        return reply(h, 206, DATA[start:],
                     {"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"})

    reader = _resuming(hostile(behave).url + "/b")
    assert b"".join(iter(reader.read, b"")) == DATA
    assert asked == [None, "bytes=5000-"]


def test_a_resumed_body_sent_whole_again_skips_what_was_passed_on(hostile):
    asked: list[str | None] = []
    reader = _resuming(hostile(_cut_once_then_whole(asked, 3000)).url + "/b")
    assert b"".join(iter(reader.read, b"")) == DATA


def test_a_body_cut_off_without_a_way_to_resume_names_what_it_got(hostile):
    server = hostile(lambda h: cut_off(h, DATA, 3000))
    reader = body.BodyReader(_get(new_session(TLSConfig()), server.url + "/b"), "blob x",
                             len(DATA))
    with pytest.raises(NetworkError, match="^blob x: "):
        b"".join(iter(reader.read, b""))


def test_a_small_document_over_its_cap_is_refused(hostile):
    server = hostile(lambda h: reply(h, 200, DATA))
    session = new_session(TLSConfig())
    with pytest.raises(RegistryError, match=r"^manifest x: larger than 1000 bytes; refused$"):
        body.read_small(lambda: _get(session, server.url + "/m"), 1000, "manifest x")
    got, response = body.read_small(lambda: _get(session, server.url + "/m"), len(DATA), "m")
    assert got == DATA and response.status_code == 200


def test_a_small_document_cut_off_is_asked_for_again_from_its_start(hostile):
    asked: list[str | None] = []
    server = hostile(_cut_once_then_whole(asked, 100))
    session = new_session(TLSConfig())
    got, _ = body.read_small(lambda: _get(session, server.url + "/m"), len(DATA), "m",
                             policy=QUICK)
    assert got == DATA and asked == [None, None]  # never by Range: a tag may have moved


def test_an_error_body_is_read_to_its_cap_and_no_further(hostile):
    server = hostile(lambda h: hs.endless(h, 500, b'{"errors":'))
    response = send(new_session(TLSConfig()), "GET", server.url + "/e", stream=True,
                    timeout=5, policy=retry.Policy(1))
    got = body.error_body(response)
    assert len(got) == body.MAX_ERROR_BODY and got.startswith(b'{"errors":')


def test_released_small_answers_keep_their_connection_large_ones_do_not(hostile):
    ports: list[int] = []

    def behave(h):
        ports.append(h.client_address[1])
        size = body.MAX_DRAIN if h.path == "/small" else body.MAX_DRAIN + 1
        return reply(h, 404, bytes(size))

    server = hostile(behave)
    session = new_session(TLSConfig())
    for path in ("/small", "/small", "/large", "/small"):
        body.release(_get(session, server.url + path))
    # The second request rides the first's connection; the one after the large body cannot.
    assert ports[0] == ports[1] == ports[2] != ports[3], ports


def test_the_rate_rule():
    grace = 60.0
    assert not body.too_slow(0, grace, grace)  # inside the grace, nothing is owed
    assert body.too_slow(0, grace + 0.01, grace)
    earned = 10 * body.MIN_RATE  # ten seconds' worth
    assert not body.too_slow(earned, grace + 10, grace)
    assert body.too_slow(earned, grace + 10.01, grace)
