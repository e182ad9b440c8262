"""When to try a request again, and how long to wait first.

Backoff: attempt n (from 0) waits a uniformly random time in [0, min(cap, base * 2**n)]
("full jitter"), or what the server's Retry-After asks if it says; every request gives up after
`attempts` tries or once `budget` seconds have passed since its first try, whichever is first.
Only idempotent requests (GET, HEAD) are retried; 401/403/404 never are: they are answers.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bundler.errors import DigestMismatch

T = TypeVar("T")
log = logging.getLogger(__name__)

# Statuses a registry or proxy sends when trying again later may succeed.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Policy:
    attempts: int = 6
    base: float = 0.25
    cap: float = 20.0
    budget: float = 180.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


DEFAULT = Policy()


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    # ASCII digits only: str.isdigit() is also true of "²" (a latin-1 header byte, 0xb2),
    # which float() refuses with a ValueError.
    if value.isascii() and value.isdigit():
        return float(value)
    import email.utils  # here: most runs never see a Retry-After date

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Attempts:
    """Counts the tries of one request against a policy; wait() sleeps or says stop."""

    def __init__(self, policy: Policy = DEFAULT):
        self.policy = policy
        self.count = 0
        self._start = time.monotonic()

    def wait(self, retry_after_s: float | None = None) -> float | None:
        """Sleep before the next try and return the delay; None when out of tries or time."""
        self.count += 1
        if self.count >= self.policy.attempts:
            return None
        delay = self.policy.delay(self.count - 1, retry_after_s)
        if time.monotonic() - self._start + delay > self.policy.budget:
            return None
        time.sleep(delay)
        return delay


def again(attempts: Attempts, problem: object, retry_after_s: float | None) -> bool:
    """Wait before the next try of `problem`'s request, saying so under -v; False when spent."""
    delay = attempts.wait(retry_after_s)
    if delay is None:
        return False
    log.info("%s; retrying after %.1fs (attempt %d of %d)", problem, delay,
             attempts.count + 1, attempts.policy.attempts)
    return True


def refetch_once(fetch: Callable[[], T]) -> T:
    """Run `fetch`; if its bytes fail their digest, fetch once more from the start.

    A flipped byte in transit (a broken proxy, a bad NIC) should not fail a release build;
    the same mismatch twice is the content itself, and is reported.
    """
    try:
        return fetch()
    except DigestMismatch as e:
        log.info("%s; fetching it again from the start", e)
        return fetch()
