"""The integration kit for blocking code: ``SyncIntegration``, what an adapter for a synchronous HTTP
library (``integration_kit.requests_adapter``) runs each call through — the shared limiter, the probes'
retry policy, the traffic counters (flushed by a background thread) and the typed ``CallError``.

An adapter hands ``run`` one function, ``send(deadline) -> Attempt``: send the request once within the
deadline (a ``time.monotonic()`` value) and classify what came back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from integration_kit.calls import DEFAULT_EXPECT, Expect
from integration_kit.integration_base import DEFAULT_RETRY, Attempt, IntegrationBase, limiter_attempt
from integration_kit.limiter import LimiterTimeout, RateLimit, SyncRateLimiter
from integration_kit.recorder import SyncTrafficRecorder
from integration_kit.retry import RetryPolicy, run_with_retries_sync
from integration_kit.traffic import DEFAULT_PREFIX, DEFAULT_TTL

if TYPE_CHECKING:
    import redis


class SyncIntegration(IntegrationBase):
    """One vendor integration of a blocking service; the options are ``Integration``'s, with a
    ``redis.Redis`` client. Use ``with`` (or ``start()`` / ``close()``): a daemon thread flushes the
    counters, ``close()`` flushes a last time."""

    recorder: SyncTrafficRecorder | None

    def __init__(
        self,
        name: str,
        *,
        redis: redis.Redis | None = None,
        rate_limit: RateLimit | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = 30.0,
        expect: Expect = DEFAULT_EXPECT,
        secrets: Iterable[str] = (),
        record: bool = True,
        key_prefix: str = DEFAULT_PREFIX,
        ttl: int = DEFAULT_TTL,
        flush_interval: float = 1.0,
    ) -> None:
        super().__init__(name, retry=retry, timeout=timeout, expect=expect, secrets=secrets,
                         shared=redis is not None, rate_limited=rate_limit is not None)
        self.limiter = (
            None if rate_limit is None or redis is None else SyncRateLimiter(redis, rate_limit, integration=name)
        )
        self.recorder = (
            SyncTrafficRecorder(redis, name, prefix=key_prefix, ttl=ttl, interval=flush_interval)
            if redis is not None and record else None
        )

    def start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

    def __enter__(self) -> SyncIntegration:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, method: str, url: Any, headers: Mapping[str, str], send: Callable[[float], Attempt]) -> Any:
        """One call: ``send`` once per attempt, under the limiter and the retry policy; the answer of the
        last attempt (``Attempt.response``) or a ``CallError``."""
        throttled, bypassed = 0.0, False

        def attempt(deadline: float) -> Attempt:
            nonlocal throttled, bypassed
            if self.limiter is not None:
                try:
                    slot = self.limiter.acquire(deadline=deadline)
                    throttled, bypassed = throttled + slot.waited, bypassed or slot.bypassed
                except LimiterTimeout as exc:
                    return limiter_attempt(exc, throttled)
            result = send(deadline)
            if result.error_class is not None:
                self.log_retry(method, url, result)
            return result

        last, classes = run_with_retries_sync(attempt, self.retry, deadline=time.monotonic() + self.timeout)
        return self.finish(method, url, headers, last, len(classes), throttled, bypassed=bypassed)
