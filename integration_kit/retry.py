"""Retries for any call that is classified into error classes: retryable classes only, exponential
backoff with full jitter, ``Retry-After`` honoured, never a wait that ends past the call's deadline and
never an attempt that starts after it.

The probes use it for every check run (their ``retry:`` config becomes a ``RetryPolicy``), and so can
integration services for their own calls to a vendor. The runner knows nothing about HTTP: an attempt is
any coroutine that returns an outcome carrying its error class (``None`` = success) and, optionally, how
long the target asked us to wait.

``Backoff`` is the one back-off of a loop that keeps trying (a reconnecting reader, a restarting loop,
a notifier lane): consecutive failures → the next wait, exponential with equal jitter, reset on success.

``parse_retry_after`` is the one reader of ``Retry-After`` values: the probes' retries, the rate-limit
header parser (``integration_kit.ratelimit_headers``) and the Slack notifier all use it;
``rate_limit_wait`` is what a refused response asks of a retry (its Retry-After, or the reset of a
rate limit it announces as used up).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar

from integration_kit.errors import RETRYABLE_BY_DEFAULT, ErrorClass
from integration_kit.header_values import first_number, seconds_until, used_up_limit


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How to retry one call. ``attempts`` counts the first one; the wait before retry ``n`` (from 0) is
    uniform in ``[0, min(max_backoff, backoff * 2**n))`` seconds, and never shorter than a Retry-After."""

    attempts: int = 1
    backoff: float = 0.5
    max_backoff: float = 8.0
    retry_on: frozenset[ErrorClass] = RETRYABLE_BY_DEFAULT  # the classes a retry can fix

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"backoff and max_backoff must be >= 0 seconds, got {self.backoff!r}/{self.max_backoff!r}")


class AttemptOutcome(Protocol):
    @property
    def error_class(self) -> ErrorClass | None: ...

    @property
    def retry_after(self) -> float | None: ...  # seconds the target asked us to wait, if it said


OutcomeT = TypeVar("OutcomeT", bound=AttemptOutcome)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value; None when absent or not understood.

    The rules, in order:

    * a number (of a repeated field, the first: ``"30, 30"`` from a proxy is 30) is delay seconds;
      fractional values are accepted (``"1.5"``), negative ones mean "now" (0), NaN, infinities and
      values above 1e15 are not understood;
    * a number above 1e12 is an epoch in milliseconds and one above 1e9 an epoch in seconds (not
      standard, but vendors send it): the time left until then, 0 if it has passed;
    * anything else is read as an HTTP-date (``Wed, 21 Oct 2015 07:28:00 GMT``; a date without a zone is
      GMT, as HTTP dates always are): the time left until then, 0 if it has passed.

    ``now`` is epoch seconds (for the epoch and date forms).
    """
    if not value:
        return None
    text = value.strip()
    number = first_number(text)
    if number is not None:
        return seconds_until(number, now=now)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" parses zone-less; RFC 9110 dates are GMT anyway
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def rate_limit_wait(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds a refused response asks us to wait (``headers`` case-insensitive, as aiohttp's and
    requests' are): its ``Retry-After``, or without one the reset of a rate limit its headers announce as
    used up (GitHub's primary limit: ``x-ratelimit-remaining: 0`` and the epoch it resets at), so a retry
    does not ask again before the vendor would answer; None when it says neither."""
    wait = parse_retry_after(headers.get("Retry-After"), now=now)
    if wait is None and (used_up := used_up_limit(headers)) is not None and used_up[1] is not None:
        wait = seconds_until(used_up[1], now=now)
    return wait


def backoff_delay(policy: RetryPolicy, retry_index: int, rand: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(max_backoff, backoff * 2**retry_index)); retry_index starts at 0."""
    cap = min(policy.max_backoff, policy.backoff * (2.0**retry_index))
    return cap * rand()


@dataclass(slots=True, kw_only=True)
class Backoff:
    """Consecutive failures of a loop that keeps trying → how long to wait before the next try.

    The n-th failure in a row waits uniformly in ``[cap_n / 2, cap_n]`` with ``cap_n = min(cap, first *
    2**(n-1))`` ("equal jitter": never near zero, so a loop failing at once never spins, and loops that
    failed together do not retry together). ``succeeded()`` starts over.
    """

    first: float = 1.0
    cap: float = 60.0
    failures: int = 0
    rand: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(f"expected 0 < first <= cap seconds, got {self.first!r}/{self.cap!r}")

    def failed(self) -> float:
        """Count one more failure; the seconds to wait before trying again."""
        self.failures += 1
        ceiling = min(self.cap, self.first * 2.0 ** min(self.failures - 1, 62))
        return ceiling / 2 + self.rand() * ceiling / 2

    def succeeded(self) -> None:
        self.failures = 0


def next_wait(
    policy: RetryPolicy,
    retry_index: int,
    retry_after: float | None,
    rand: Callable[[], float] = random.random,
) -> float:
    """The wait before the next attempt: the jittered backoff, but never shorter than Retry-After."""
    delay = backoff_delay(policy, retry_index, rand)
    return delay if retry_after is None else max(delay, retry_after)


def wait_before_retry(
    policy: RetryPolicy,
    outcome: AttemptOutcome,
    attempts: int,
    *,
    now: float,
    deadline: float,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before attempt ``attempts + 1`` after ``outcome``, or None: that was the answer
    (success, a class not to retry, no attempts left, or a wait that would end at or past ``deadline``:
    no time would be left for the attempt). The one decision of both runners below."""
    error_class = outcome.error_class
    if error_class is None or error_class not in policy.retry_on or attempts >= policy.attempts:
        return None
    wait = next_wait(policy, attempts - 1, outcome.retry_after, rand)
    return None if now + wait >= deadline else wait


async def run_with_retries(
    attempt: Callable[[float], Awaitable[OutcomeT]],
    policy: RetryPolicy,
    *,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    first: OutcomeT | None = None,
) -> tuple[OutcomeT, tuple[ErrorClass | None, ...]]:
    """Run ``attempt(deadline)`` until it succeeds, fails with a class not to retry, runs out of
    attempts, or the next wait would end at or past ``deadline`` (a ``clock()`` value). A wait that
    overran the deadline anyway (a loaded machine wakes late) starts no attempt: one with no time left
    could only time out at once, and would hide the real last failure.

    ``first``: the outcome of the first attempt, when the caller made it itself (the kit's middleware
    does: a call that succeeds at once, the usual case, then costs nothing of this machinery).

    Returns the last outcome and the class of every attempt made, in order.
    """
    classes: list[ErrorClass | None] = []
    outcome = first if first is not None else await attempt(deadline)
    while True:
        classes.append(outcome.error_class)
        wait = wait_before_retry(policy, outcome, len(classes), now=clock(), deadline=deadline, rand=rand)
        if wait is None:
            return outcome, tuple(classes)
        await sleep(wait)
        if clock() >= deadline:
            return outcome, tuple(classes)
        outcome = await attempt(deadline)


def run_with_retries_sync(
    attempt: Callable[[float], OutcomeT],
    policy: RetryPolicy,
    *,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    rand: Callable[[], float] = random.random,
) -> tuple[OutcomeT, tuple[ErrorClass | None, ...]]:
    """``run_with_retries`` for blocking code (the kit's requests adapter): the same policy and decision."""
    classes: list[ErrorClass | None] = []
    while True:
        outcome = attempt(deadline)
        classes.append(outcome.error_class)
        wait = wait_before_retry(policy, outcome, len(classes), now=clock(), deadline=deadline, rand=rand)
        if wait is None:
            return outcome, tuple(classes)
        sleep(wait)
        if clock() >= deadline:
            return outcome, tuple(classes)
