"""Fetching through a front that injects network faults: the bundle must come out the same."""

from __future__ import annotations

import collections
import logging
import random
import re
import threading
import time
from datetime import timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.errors import DigestMismatch, RegistryError
from bundler.registry import retry
from tests.cli_helpers import assert_one_line_error, build_args, bundler
from tests.conftest import REFS, STEM
from tests.faultproxy import RegistryFront
from tests.httpreply import cut_off, head, reply
from tests.servers import login, write_registries_yaml

USER, PASSWORD = "u", "p"


class Faults:
    """Decides, per request, which fault to inject; each blob and manifest is hit once."""

    BLOB_FAULTS = ("reset", "stall", "short", "flip")

    def __init__(self, front_ref: list, stall_seconds: float):
        self.front_ref = front_ref
        self.stall_seconds = stall_seconds
        self.seen: collections.Counter = collections.Counter()
        self.injected: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        self.blob_faults: dict[str, str] = {}
        self.manifest_order: dict[str, int] = {}

    def __call__(self, h, server: str) -> bool:
        path = h.path.split("?", 1)[0]
        with self.lock:
            self.seen[(server, h.command, path)] += 1
            count = self.seen[(server, h.command, path)]
            if "/manifests/" in path and h.command == "GET":
                # The first manifest asked for is rate limited once; the second gets 3 503s.
                order = self.manifest_order.setdefault(path, len(self.manifest_order))
        if "/manifests/" in path and h.command == "GET":
            if order == 0 and count == 1:
                return self._status(h, 429, {"Retry-After": "1", "RateLimit-Remaining": "0"})
            if order == 1 and count <= 3:
                return self._status(h, 503, {})
        first = count == 1
        if "/blobs/" in path and h.command == "GET" and server == "storage" and first \
                and "Range" not in h.headers:
            with self.lock:
                kind = self.blob_faults.setdefault(
                    path, self.BLOB_FAULTS[len(self.blob_faults) % len(self.BLOB_FAULTS)])
                self.injected[kind] += 1
            return getattr(self, kind)(h, self.front_ref[0].upstream_body(path))
        return False

    def _status(self, h, status: int, headers: dict) -> bool:
        with self.lock:
            self.injected[str(status)] += 1
        reply(h, status, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}', headers)
        return True

    def reset(self, h, body: bytes) -> bool:
        return cut_off(h, body, len(body) // 2, reset=True)

    def stall(self, h, body: bytes) -> bool:
        head(h, 200, len(body))
        h.wfile.write(body[: len(body) // 3])
        h.wfile.flush()
        time.sleep(self.stall_seconds)
        h.close_connection = True
        return True

    def short(self, h, body: bytes) -> bool:
        # A complete HTTP response that is simply too short for the blob.
        return reply(h, 200, body[: len(body) // 2])

    def flip(self, h, body: bytes) -> bool:
        damaged = bytearray(body)
        damaged[len(body) // 2] ^= 0x01
        return reply(h, 200, bytes(damaged))


@pytest.fixture
def faulty_front(fixture_registry):
    front_ref: list = []
    faults = Faults(front_ref, stall_seconds=3)
    front = RegistryFront(fixture_registry.registry.url, username=USER, password=PASSWORD,
                          redirect_blobs=True, fault=faults)
    front_ref.append(front)
    yield front, faults
    front.stop()


def test_faults_are_survived_and_the_bundle_is_unchanged(faulty_front, builds, tmp_path):
    front, faults = faulty_front
    yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]},
                                 login(front.host, USER, PASSWORD))
    run = bundler("-v", *build_args(None, tmp_path, REFS, "--timeout", "1", registries=yaml))
    assert run.code == 0, run.stderr
    # Every kind of fault happened, and was survived.
    for kind in ("429", "503", *Faults.BLOB_FAULTS):
        assert faults.injected[kind] >= 1, (kind, faults.injected)
    assert "retrying" in run.stderr and "fetching it again" in run.stderr
    for name in (f"{STEM}.tar.zst", f"{STEM}.manifest.json"):
        assert (tmp_path / "dist" / name).read_bytes() == (builds["p1"] / name).read_bytes()
    # Blob storage behind the redirect never saw the registry's credentials.
    storage = [auth for server, _, auth in front.requests if server == "storage"]
    assert storage and all(auth == "" for auth in storage)
    # Retries are bounded: no path was asked for more than a handful of times.
    assert max(faults.seen.values()) <= 4, faults.seen.most_common(3)


def test_permanent_503_gives_up_with_a_count(fixture_registry, tmp_path, monkeypatch):
    def always_503(h, server):
        return reply(h, 503)

    front = RegistryFront(fixture_registry.registry.url, fault=always_503)
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]})
        (tmp_path / "images.txt").write_text("busybox:1.36.1\n")
        started = time.monotonic()
        run = bundler("build", "--images", str(tmp_path / "images.txt"), "--output-dir",
                      str(tmp_path / "dist"), "--registries", str(yaml), "--no-default-endpoint")
        elapsed = time.monotonic() - started
    finally:
        front.stop()
    assert_one_line_error(run, "docker.io/library/busybox:1.36.1", "503")
    assert len(front.requests) == retry.DEFAULT.attempts
    assert elapsed < retry.DEFAULT.budget


def test_404_and_401_are_not_retried(fixture_registry, tmp_path):
    front = RegistryFront(fixture_registry.registry.url, username="x", password="y")
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]})
        (tmp_path / "images.txt").write_text("busybox:1.36.1\n")
        run = bundler("build", "--images", str(tmp_path / "images.txt"), "--output-dir",
                      str(tmp_path / "dist"), "--registries", str(yaml), "--no-default-endpoint",
                      env={"DOCKER_CONFIG": str(tmp_path)})
    finally:
        front.stop()
    assert_one_line_error(run, "access denied")
    assert len(front.requests) == 1


def test_retry_after_forms():
    assert retry.retry_after("3") == 3.0
    assert retry.retry_after(None) is None
    assert retry.retry_after("garbage") is None
    assert 0 <= retry.retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(st.characters(max_codepoint=0xff), max_size=40),
                 # digits among the latin-1 characters str.isdigit() also takes
                 st.text(st.sampled_from("0123456789 \xb2\xb3\xb9"), min_size=1, max_size=6),
                 st.from_regex(r"\A *[0-9]{1,400} *\Z", fullmatch=True),
                 st.datetimes(timezones=st.just(timezone.utc)).map(format_datetime)))
def test_any_retry_after_header_is_a_delay_or_none(value):
    """A registry's header arrives as latin-1 text (http.client): whatever it says is a
    non-negative delay or ignored, never an exception."""
    after = retry.retry_after(value)
    assert after is None or after >= 0
    if value.strip().isascii() and value.strip().isdigit():
        # (str.strip() also takes the ASCII separators \x1c-\x1f away; float() does not)
        assert after == float(value.strip())


def test_a_superscript_digit_is_not_a_delay():
    assert retry.retry_after("\xb2") is None
    assert retry.retry_after("1\xb9") is None


def test_persistent_429_shows_the_rate_limit(fixture_registry, tmp_path):
    def limited(h, server):
        return reply(h, 429, b'{"errors":[{"code":"TOOMANYREQUESTS",'
                     b'"message":"You have reached your pull rate limit."}]}',
                     {"Retry-After": "0", "RateLimit-Limit": "100;w=21600",
                      "RateLimit-Remaining": "0;w=21600"})

    front = RegistryFront(fixture_registry.registry.url, fault=limited)
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml", {"docker.io": [front.url]})
        (tmp_path / "images.txt").write_text("busybox:1.36.1\n")
        run = bundler("build", "--images", str(tmp_path / "images.txt"), "--output-dir",
                      str(tmp_path / "dist"), "--registries", str(yaml), "--no-default-endpoint")
    finally:
        front.stop()
    assert_one_line_error(run, "docker.io/library/busybox:1.36.1", "rate limited",
                          "ratelimit-limit: 100;w=21600", "ratelimit-remaining: 0;w=21600")
    assert len(front.requests) == retry.DEFAULT.attempts


def test_manifest_and_config_cut_off_are_retried_on_the_same_mirror(fixture_registry, tmp_path):
    """A reset mid-body of a manifest or a config is retried on the mirror
    that sent it; the next endpoint is never asked."""
    img = fixture_registry.images["docker.io/rancher/multilist:v1"]
    index_path = "/v2/rancher/multilist/manifests/v1"
    config_path = f"/v2/rancher/multilist/blobs/sha256:{_sha256(img.config)}"
    cut: collections.Counter = collections.Counter()

    def reset_once(h, server):
        path = h.path.split("?", 1)[0]
        if h.command != "GET" or path not in (index_path, config_path) or cut[path]:
            return False
        cut[path] += 1
        headers = {k: v for k, v in h.headers.items() if k.lower() == "accept"}
        upstream = requests.get(fixture_registry.registry.url + path, headers=headers,
                                timeout=30)
        return cut_off(h, upstream.content, len(upstream.content) // 2,
                       {"Content-Type": upstream.headers.get("Content-Type", "")}, reset=True)

    faulty = RegistryFront(fixture_registry.registry.url, fault=reset_once)
    fallback = RegistryFront(fixture_registry.registry.url)
    try:
        yaml = write_registries_yaml(tmp_path / "r.yaml",
                                     {"docker.io": [faulty.url, fallback.url]})
        run = bundler("-v", *build_args(None, tmp_path, ["rancher/multilist:v1"],
                                        registries=yaml))
    finally:
        faulty.stop()
        fallback.stop()
    assert run.code == 0, run.stderr
    assert cut == {index_path: 1, config_path: 1}
    assert fallback.requests == [], "fell back to the next endpoint"
    assert "retrying" in run.stderr
    # The cut GET and the GET again: a build with an empty store asks no HEAD first.
    assert [p for _, p, _ in faulty.requests].count(index_path) == 2


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# -- the policy itself, without a network: what README says (6 tries, 0.25 s doubling, at most
# 20 s a wait, 180 s in all, Retry-After honoured) ------------------------------------------

def test_the_default_policy_is_the_one_the_docs_state():
    # Read from docs/build.md, so the page and the code cannot part.
    text = " ".join((Path(__file__).parent.parent / "docs" / "build.md").read_text().split())
    said = re.search(r"or ([\d, ]+) are retried up to (\d+) times with jittered exponential "
                     r"backoff \(([\d.]+) s doubling, at most ([\d.]+) s a wait, ([\d.]+) s in "
                     r"all\)", text)
    assert said, "docs/build.md no longer states the retry policy"
    assert retry.DEFAULT == retry.Policy(attempts=int(said[2]), base=float(said[3]),
                                         cap=float(said[4]), budget=float(said[5]))
    assert retry.RETRY_STATUSES == {int(n) for n in re.findall(r"\d+", said[1])}
    # Only what may be asked twice is asked twice: a blob upload's PUT is not.
    assert retry.IDEMPOTENT == {"GET", "HEAD"}


def test_backoff_is_full_jitter_up_to_base_doubled_and_capped():
    state = random.getstate()
    random.seed(1)
    try:
        policy = retry.Policy(base=0.25, cap=20.0)
        for attempt in range(10):
            bound = min(20.0, 0.25 * 2**attempt)
            delays = [policy.delay(attempt) for _ in range(300)]
            # Uniform over [0, bound]: all inside, and both ends come near.
            assert all(0 <= d <= bound for d in delays), attempt
            assert max(delays) > 0.95 * bound and min(delays) < 0.05 * bound, attempt
    finally:
        random.setstate(state)


@pytest.mark.parametrize(("asked", "delay"), [(0.0, 0.0), (2.5, 2.5), (-3.0, 0.0), (60.0, 60.0)])
def test_retry_after_is_the_delay_as_asked_never_negative(asked, delay):
    assert retry.Policy(cap=1.0).delay(4, asked) == delay


class Recorded(retry.Policy):
    """The default policy, but remembering which attempt number each delay was asked for."""

    def delay(self, attempt, retry_after=None):
        self.__dict__.setdefault("asked", []).append((attempt, retry_after))
        return 0.0 if retry_after is None else retry_after


def test_attempts_allows_the_policys_tries_numbering_the_waits_from_zero():
    policy = Recorded(attempts=4)
    attempts = retry.Attempts(policy)
    assert [attempts.wait(), attempts.wait(0.01), attempts.wait()] == [0.0, 0.01, 0.0]
    assert attempts.wait() is None  # the fourth try was the last
    assert attempts.count == 4
    assert policy.asked == [(0, None), (1, 0.01), (2, None)]


def test_attempts_sleeps_the_delay_and_stops_rather_than_overrun_the_budget():
    attempts = retry.Attempts(retry.Policy(attempts=10, budget=1.0))
    started = time.monotonic()
    assert attempts.wait(0.2) == 0.2
    assert time.monotonic() - started >= 0.2
    # 0.2 s spent of 1 s: a wait of 0.9 s would end past the budget, so none is made.
    assert attempts.wait(0.9) is None
    assert time.monotonic() - started < 0.5


def test_one_attempt_policy_never_waits():
    assert retry.Attempts(retry.Policy(attempts=1)).wait(0.0) is None


def test_again_says_what_is_retried_and_when(caplog):
    # Backoff of at most 2 ms: a wait of 0.3 s can only be the server's Retry-After.
    attempts = retry.Attempts(retry.Policy(attempts=3, base=0.001))
    with caplog.at_level(logging.INFO, logger=retry.__name__):
        assert retry.again(attempts, "GET /v2/x: 503", 0.3) is True
        assert retry.again(attempts, "GET /v2/x: 503", 0.0) is True
        assert retry.again(attempts, "GET /v2/x: 503", 0.0) is False
    assert caplog.messages == ["GET /v2/x: 503; retrying after 0.3s (attempt 2 of 3)",
                               "GET /v2/x: 503; retrying after 0.0s (attempt 3 of 3)"]


def test_refetch_once_fetches_again_after_a_mismatch_and_not_after_two(caplog):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise DigestMismatch("img: layer 0: digest mismatch")
        return b"good"

    with caplog.at_level(logging.INFO, logger=retry.__name__):
        assert retry.refetch_once(flaky) == b"good"
    assert len(calls) == 2
    assert caplog.messages == ["img: layer 0: digest mismatch; fetching it again from the start"]

    def broken():
        calls.append(1)
        raise DigestMismatch("the same twice")

    calls.clear()
    with pytest.raises(DigestMismatch, match="the same twice"):
        retry.refetch_once(broken)
    assert len(calls) == 2


def test_refetch_once_does_not_repeat_other_errors():
    calls = []

    def refused():
        calls.append(1)
        raise RegistryError("img: 404")

    with pytest.raises(RegistryError):
        retry.refetch_once(refused)
    assert len(calls) == 1
