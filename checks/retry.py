"""Retries for any probe kind: retryable classes only, exponential backoff with full jitter, Retry-After
honoured, and never a wait that ends past the run's deadline.

The runner knows nothing about HTTP: an attempt is any coroutine that returns an outcome carrying its
error class (``None`` = success) and, optionally, how long the target asked us to wait.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar

from checks.base import RetryPolicy
from integration_kit.errors import ErrorClass


class AttemptOutcome(Protocol):
    @property
    def error_class(self) -> ErrorClass | None: ...

    @property
    def retry_after(self) -> float | None: ...  # seconds the target asked us to wait, if it said


OutcomeT = TypeVar("OutcomeT", bound=AttemptOutcome)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta seconds (fractional tolerated) or an HTTP-date.

    ``now`` is epoch seconds (for the date form). Returns None when absent or unparseable; a date in
    the past gives 0.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        # float() also takes "nan"/"inf": neither is a wait.
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses zone-less; RFC 9110 dates are GMT anyway
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def backoff_delay(policy: RetryPolicy, retry_index: int, rand: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(max_backoff, backoff * 2**retry_index)); retry_index starts at 0."""
    cap = min(policy.max_backoff, policy.backoff * (2.0**retry_index))
    return cap * rand()


def next_wait(
    policy: RetryPolicy,
    retry_index: int,
    retry_after: float | None,
    rand: Callable[[], float] = random.random,
) -> float:
    """The wait before the next attempt: the jittered backoff, but never shorter than Retry-After."""
    delay = backoff_delay(policy, retry_index, rand)
    return delay if retry_after is None else max(delay, retry_after)


async def run_with_retries(
    attempt: Callable[[float], Awaitable[OutcomeT]],
    policy: RetryPolicy,
    *,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> tuple[OutcomeT, tuple[ErrorClass | None, ...]]:
    """Run ``attempt(deadline)`` until it succeeds, fails with a class not to retry, runs out of
    attempts, or the next wait would end at or past ``deadline`` (a ``clock()`` value).

    Returns the last outcome and the class of every attempt made, in order.
    """
    retryable = policy.retryable
    classes: list[ErrorClass | None] = []
    while True:
        outcome = await attempt(deadline)
        error_class = outcome.error_class
        classes.append(error_class)
        if error_class is None or error_class not in retryable or len(classes) >= policy.attempts:
            return outcome, tuple(classes)
        wait = next_wait(policy, len(classes) - 1, outcome.retry_after, rand)
        if clock() + wait >= deadline:
            # Waiting would leave no time for the attempt: the last failure is the answer.
            return outcome, tuple(classes)
        await sleep(wait)
