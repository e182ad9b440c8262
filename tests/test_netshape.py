"""The benchmark's network-shaped front (tests/netshape.py), in front of a real registry.

What it adds (a delay per request, a bandwidth cap per connection) is measured here on
loopback with generous bounds, so a loaded machine does not fail these; what it must not
change (bodies, Range, HEAD, redirects, uploads, keep-alive) is compared byte for byte.
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.netshape import NetShape
from tests.registryseed import push_blob
from tests.servers import Registry

REPO = "netshape/blob"
BLOB = random.Random(12).randbytes(4 << 20)
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
BLOB_PATH = f"/v2/{REPO}/blobs/{DIGEST}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Registry:
    reg = Registry(Path(tmp_path_factory.mktemp("netshape-registry"))).start()
    push_blob(reg.url, REPO, BLOB)
    yield reg
    reg.stop()


@pytest.fixture
def front_factory(registry):
    fronts: list[NetShape] = []

    def make(**kw) -> NetShape:
        fronts.append(NetShape(registry.url, **kw).start())
        return fronts[-1]

    yield make
    for f in fronts:
        f.stop()


def _timed(fn) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def test_every_request_is_delayed(registry, front_factory):
    front = front_factory(delay=0.1, rate=1e9)
    with requests.Session() as s:
        s.get(f"{front.url}/v2/", timeout=10)  # connections warm on both sides
        s.get(f"{registry.url}/v2/", timeout=10)
        shaped = _timed(lambda: [s.get(f"{front.url}/v2/", timeout=10) for _ in range(10)])
        direct = _timed(lambda: [s.get(f"{registry.url}/v2/", timeout=10) for _ in range(10)])
    assert shaped >= 10 * 0.1 * 0.95, shaped
    assert shaped < 10 * 0.1 + 5, shaped
    assert direct < shaped / 2, (direct, shaped)


def test_a_connection_gets_at_most_the_rate(registry, front_factory):
    front = front_factory(delay=0, rate=4e6)
    got = []
    elapsed = _timed(lambda: got.append(requests.get(front.url + BLOB_PATH, timeout=30).content))
    assert got[0] == BLOB
    expected = len(BLOB) / 4e6  # 1.05 s
    assert expected * 0.9 <= elapsed < expected * 3 + 2, elapsed


def test_the_cap_is_per_connection_not_shared(registry, front_factory):
    front = front_factory(delay=0, rate=2e6)
    bodies: list[bytes] = []

    def fetch() -> None:
        bodies.append(requests.get(front.url + BLOB_PATH, timeout=30).content)

    def both() -> None:
        threads = [threading.Thread(target=fetch) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

    elapsed = _timed(both)
    assert bodies == [BLOB, BLOB]
    one = len(BLOB) / 2e6  # 2.1 s each; a shared cap would take 4.2 s for both
    assert one * 0.9 <= elapsed < one * 1.6, elapsed


def test_range_head_and_redirects_pass_through(registry, front_factory):
    front = front_factory(delay=0.01, rate=50e6)
    r = requests.get(front.url + BLOB_PATH, headers={"Range": "bytes=1000-1999"}, timeout=10)
    direct = requests.get(registry.url + BLOB_PATH, headers={"Range": "bytes=1000-1999"},
                          timeout=10)
    assert (r.status_code, r.content) == (206, BLOB[1000:2000])
    assert r.headers["Content-Range"] == direct.headers["Content-Range"]

    r = requests.head(front.url + BLOB_PATH, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(BLOB))
    assert r.headers["Docker-Content-Digest"] == DIGEST

    # The registry redirects /v2 to /v2/; the front hands the redirect on, it does not follow.
    r = requests.get(front.url + "/v2", allow_redirects=False, timeout=10)
    assert (r.status_code, r.headers["Location"]) == (301, "/v2/")

    r = requests.get(front.url + "/v2/netshape/blob/manifests/nope", timeout=10)
    assert r.status_code == 404 and b"MANIFEST_UNKNOWN" in r.content


def test_uploads_pass_through_and_locations_name_the_front(registry, front_factory):
    front = front_factory(delay=0.01, rate=50e6)
    data = random.Random(7).randbytes(300_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with requests.Session() as s:
        r = s.post(f"{front.url}/v2/netshape/up/blobs/uploads/", timeout=10)
        assert r.status_code == 202
        assert r.headers["Location"].startswith(front.url + "/")
        # A generator body goes chunked: the front must re-frame it, not pass it raw.
        pieces = (data[i:i + 70_000] for i in range(0, len(data), 70_000))
        r = s.patch(r.headers["Location"], data=pieces, timeout=10,
                    headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        sep = "&" if "?" in r.headers["Location"] else "?"
        r = s.put(f"{r.headers['Location']}{sep}digest={digest}", timeout=10)
        assert r.status_code == 201, r.text
    got = requests.get(f"{registry.url}/v2/netshape/up/blobs/{digest}", timeout=10).content
    assert got == data


def test_keep_alive_is_kept(registry, front_factory):
    front = front_factory(delay=0, rate=50e6)
    with requests.Session() as s:
        for _ in range(5):
            assert s.get(front.url + BLOB_PATH, timeout=10).content == BLOB
            assert s.head(front.url + BLOB_PATH, timeout=10).status_code == 200
    assert front.requests == 10
    assert front.connections == 1


def test_stop_cuts_open_connections_and_joins_its_threads(registry):
    before = threading.active_count()
    front = NetShape(registry.url, delay=0, rate=1e6).start()
    idle = socket.create_connection(("127.0.0.1", int(front.host.rsplit(":", 1)[1])))
    busy_done = threading.Event()

    def slow_download() -> None:  # 4 s at 1 MB/s: still running when stop() comes
        try:
            _ = requests.get(front.url + BLOB_PATH, timeout=30).content
        except requests.RequestException:
            pass
        busy_done.set()

    downloader = threading.Thread(target=slow_download)
    downloader.start()
    time.sleep(0.5)
    assert _timed(front.stop) < 5
    assert busy_done.wait(10)
    downloader.join(10)
    assert idle.recv(10) == b""  # the idle keep-alive connection was closed, not left hanging
    idle.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(front.url + "/v2/", timeout=2)
    assert threading.active_count() == before
