"""Retry policy: Retry-After parsing, full-jitter backoff, and the runner's stopping rules (fake clock)."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration_kit.errors import ErrorClass
from integration_kit.retry import (
    RetryPolicy,
    backoff_delay,
    next_wait,
    parse_retry_after,
    run_with_retries,
    run_with_retries_sync,
)

E = ErrorClass
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("  7 ", 7.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("-3", 0.0),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),  # a date in the past: go now
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30, 30", 30.0),  # a proxy repeated the field
        (str(int(NOW) + 90), 90.0),  # an epoch in seconds (non-standard, vendors send it)
        (str(int(NOW * 1000) + 1500), 1.5),  # … or in milliseconds
        (str(int(NOW) - 90), 0.0),
        ("1e16", None),
        (email.utils.formatdate(NOW + 90), 90.0),  # "-0000": no zone given, HTTP dates are GMT
    ],
)
def test_parse_retry_after_one_rule_set(value: str, expected: float | None) -> None:
    # The same reader serves the probes' retries, the rate-limit header quotas and the Slack notifier.
    assert parse_retry_after(value, now=NOW) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"-?\d{1,20}(\.\d{1,4})?", fullmatch=True))
def test_parse_retry_after_never_raises_and_never_waits_negative(value: str) -> None:
    wait = parse_retry_after(value, now=NOW)
    assert wait is None or (math.isfinite(wait) and wait >= 0)


def test_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(attempts=10, backoff=0.5, max_backoff=3.0)
    # rand() in [0, 1): the delay spans [0, cap) with cap = min(max_backoff, backoff * 2**n).
    assert backoff_delay(policy, 0, rand=lambda: 0.0) == 0.0
    assert backoff_delay(policy, 0, rand=lambda: 0.999) == pytest.approx(0.4995)
    assert backoff_delay(policy, 2, rand=lambda: 0.5) == pytest.approx(1.0)  # 0.5 * 4 * 0.5
    assert backoff_delay(policy, 9, rand=lambda: 0.5) == pytest.approx(1.5)  # capped at 3.0
    real = [backoff_delay(policy, 1) for _ in range(200)]
    assert all(0 <= d < 1.0 for d in real) and len(set(real)) > 100


def test_retry_after_is_a_floor_over_the_backoff() -> None:
    policy = RetryPolicy(attempts=3, backoff=0.5, max_backoff=8.0)
    assert next_wait(policy, 0, 5.0, rand=lambda: 0.9) == 5.0
    assert next_wait(policy, 3, 0.1, rand=lambda: 0.9) == pytest.approx(3.6)
    assert next_wait(policy, 0, None, rand=lambda: 0.5) == pytest.approx(0.25)


@dataclass
class Outcome:
    error_class: ErrorClass | None
    retry_after: float | None = None


class FakeTime:
    def __init__(self, attempt_cost: float = 0.1) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.attempt_cost = attempt_cost

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def script(fake: FakeTime, *outcomes: Outcome) -> tuple[Callable[[float], Awaitable[Outcome]], list[float]]:
    queue = list(outcomes)
    deadlines: list[float] = []

    async def attempt(deadline: float) -> Outcome:
        deadlines.append(deadline)
        fake.now += fake.attempt_cost
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return attempt, deadlines


async def run(
    fake: FakeTime, policy: RetryPolicy, *outcomes: Outcome, deadline: float = 10.0
) -> tuple[Outcome, tuple[ErrorClass | None, ...], list[float]]:
    attempt, deadlines = script(fake, *outcomes)
    outcome, classes = await run_with_retries(
        attempt, policy, deadline=deadline, clock=fake.clock, sleep=fake.sleep, rand=lambda: 0.5
    )
    return outcome, classes, deadlines


async def test_success_first_time_no_sleep() -> None:
    fake = FakeTime()
    outcome, classes, _ = await run(fake, RetryPolicy(attempts=3), Outcome(None))
    assert outcome.error_class is None and classes == (None,) and fake.sleeps == []


async def test_retryable_until_success() -> None:
    fake = FakeTime()
    policy = RetryPolicy(attempts=5, backoff=0.2, max_backoff=1.0)
    outcome, classes, deadlines = await run(fake, policy, Outcome(E.HTTP_5XX), Outcome(E.CONNECT), Outcome(None))
    assert classes == (E.HTTP_5XX, E.CONNECT, None) and outcome.error_class is None
    assert fake.sleeps == pytest.approx([0.1, 0.2])  # full jitter with rand 0.5: 0.2*2**n / 2
    assert deadlines == [10.0] * 3  # every attempt gets the run's deadline, not a fresh one


async def test_not_retryable_stops_at_once() -> None:
    fake = FakeTime()
    _, classes, _ = await run(fake, RetryPolicy(attempts=5), Outcome(E.AUTH), Outcome(None))
    assert classes == (E.AUTH,) and fake.sleeps == []


async def test_retry_on_overrides_defaults() -> None:
    fake = FakeTime()
    policy = RetryPolicy(attempts=5, retry_on=frozenset({E.MISSING_FIELD}))
    _, classes, _ = await run(fake, policy, Outcome(E.HTTP_5XX), Outcome(None))
    assert classes == (E.HTTP_5XX,)  # 5xx is not in this check's list
    _, classes, _ = await run(FakeTime(), policy, Outcome(E.MISSING_FIELD), Outcome(None))
    assert classes == (E.MISSING_FIELD, None)


async def test_attempts_are_a_total() -> None:
    fake = FakeTime()
    outcome, classes, _ = await run(fake, RetryPolicy(attempts=3, backoff=0.01), Outcome(E.TIMEOUT))
    assert classes == (E.TIMEOUT,) * 3 and outcome.error_class is E.TIMEOUT and len(fake.sleeps) == 2


async def test_retry_after_honoured() -> None:
    fake = FakeTime()
    _, classes, _ = await run(
        fake, RetryPolicy(attempts=3, backoff=0.01), Outcome(E.RATE_LIMITED, retry_after=4.0), Outcome(None)
    )
    assert classes == (E.RATE_LIMITED, None) and fake.sleeps == [4.0]


async def test_wait_past_the_deadline_returns_the_last_failure() -> None:
    fake = FakeTime()
    outcome, classes, _ = await run(
        fake, RetryPolicy(attempts=5), Outcome(E.RATE_LIMITED, retry_after=30.0), Outcome(None), deadline=10.0
    )
    assert classes == (E.RATE_LIMITED,) and outcome.error_class is E.RATE_LIMITED and fake.sleeps == []


async def test_backoff_never_sleeps_past_the_deadline() -> None:
    fake = FakeTime(attempt_cost=0.3)
    policy = RetryPolicy(attempts=20, backoff=0.4, max_backoff=2.0)
    _, classes, _ = await run(fake, policy, Outcome(E.HTTP_5XX), deadline=3.0)
    assert fake.now < 3.0 + 0.3  # the last attempt may run up to the deadline (the attempt enforces it)
    assert 2 <= len(classes) < 20
    assert fake.now - (len(classes) * 0.3) == pytest.approx(sum(fake.sleeps))


async def test_a_wait_that_overran_the_deadline_starts_no_attempt() -> None:
    """A loaded machine wakes a retry's sleep late, past the deadline: no attempt without time (it could
    only time out at once, "within -62ms"); the last real failure is the answer."""
    fake = FakeTime(attempt_cost=0.1)

    async def late_sleep(seconds: float) -> None:
        fake.sleeps.append(seconds)
        fake.now += seconds + 0.7  # 0.1 + 0.3 + 0.7: wakes at 1.1, past the 1.0 deadline

    attempt, deadlines = script(fake, Outcome(E.HTTP_5XX, retry_after=0.3))
    outcome, classes = await run_with_retries(
        attempt, RetryPolicy(attempts=5), deadline=1.0, clock=fake.clock, sleep=late_sleep, rand=lambda: 0.0
    )
    assert classes == (E.HTTP_5XX,) and outcome.error_class is E.HTTP_5XX
    assert fake.sleeps == [0.3] and len(deadlines) == 1


def test_a_blocking_wait_that_overran_the_deadline_starts_no_attempt() -> None:
    now = [0.0]
    calls: list[float] = []

    def attempt(deadline: float) -> Outcome:
        calls.append(now[0])
        now[0] += 0.1
        return Outcome(E.HTTP_5XX, retry_after=0.3)

    def late_sleep(seconds: float) -> None:
        now[0] += seconds + 0.7

    outcome, classes = run_with_retries_sync(  # the sync runner makes the same decision
        attempt, RetryPolicy(attempts=5), deadline=1.0, clock=lambda: now[0], sleep=late_sleep, rand=lambda: 0.0
    )
    assert classes == (E.HTTP_5XX,) and outcome.error_class is E.HTTP_5XX and calls == [0.0]


async def test_a_first_outcome_made_by_the_caller_counts_as_the_first_attempt() -> None:
    """The kit's middleware makes the first attempt itself (a call that succeeds then never enters the
    runner) and hands the runner a failure: the runner carries on from it as if it had made it."""
    fake = FakeTime()
    policy = RetryPolicy(attempts=3, backoff=0.2, max_backoff=1.0)
    attempt, deadlines = script(fake, Outcome(E.CONNECT), Outcome(None))
    outcome, classes = await run_with_retries(attempt, policy, deadline=10.0, clock=fake.clock, sleep=fake.sleep,
                                              rand=lambda: 0.5, first=Outcome(E.HTTP_5XX))
    assert classes == (E.HTTP_5XX, E.CONNECT, None) and outcome.error_class is None
    assert fake.sleeps == pytest.approx([0.1, 0.2]) and deadlines == [10.0, 10.0]  # two attempts of its own
    attempt, deadlines = script(fake, Outcome(None))
    outcome, classes = await run_with_retries(attempt, RetryPolicy(attempts=1), deadline=10.0, clock=fake.clock,
                                              sleep=fake.sleep, first=Outcome(E.HTTP_5XX))
    assert classes == (E.HTTP_5XX,) and deadlines == []  # no attempts left: that failure is the answer
