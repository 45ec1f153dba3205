"""What every probe kind shares: the common config, the retry settings and the probe context.

A probe never raises because the target failed: it returns a ``CheckResult`` (integration_kit.results)
whose ``error_class`` is one of the bounded classes of ``integration_kit.errors``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from integration_kit.deadlines import Deadlines
from integration_kit.durations import Duration
from integration_kit.errors import RETRYABLE_BY_DEFAULT, ErrorClass
from integration_kit.results import CheckResult
from integration_kit.retry import RetryPolicy

if TYPE_CHECKING:
    import aiohttp

    from integration_kit.redact import Redactor
    from integration_kit.token_cache import TokenCache


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeContext:
    """What the daemon hands every probe: shared client session, the redactor for secrets, the token
    cache that OAuth2 auth shares across checks and replicas, and the deadlines of the attempts in flight."""

    integration: str
    redactor: Redactor
    session: aiohttp.ClientSession | None = None  # None: the probe makes its own
    tokens: TokenCache | None = None  # the daemon's OAuth2 token cache; None: each run fetches its own
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Every attempt's deadline is a scope of these: the daemon's probes share one (one timer for all the
    # attempts in flight, where an ``asyncio.timeout`` each cost ~35 k instructions); by default the
    # context's own.
    deadlines: Deadlines = field(default_factory=Deadlines)


class RetryConfig(BaseModel):
    """The ``retry:`` key of a check; the run uses it as the kit's ``RetryPolicy`` (``policy``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=1, ge=1, le=20, description="total attempts, first included")
    backoff: Duration = Field(default=0.5, description="base of the exponential backoff (full jitter)")
    max_backoff: Duration = 8.0
    retry_on: frozenset[ErrorClass] | None = Field(
        default=None, description="error classes to retry; default: the retryable classes (integration_kit.errors)"
    )

    @cached_property
    def policy(self) -> RetryPolicy:
        retry_on = RETRYABLE_BY_DEFAULT if self.retry_on is None else self.retry_on
        return RetryPolicy(
            attempts=self.attempts, backoff=self.backoff, max_backoff=self.max_backoff, retry_on=retry_on
        )


class CheckConfigBase(BaseModel):
    """Fields every probe kind has. Each kind subclasses this with ``kind: Literal["<kind>"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Constraints on the fields themselves: a check-level validator runs only once every field is valid,
    # so its problem hid behind any other of the check's, and it named the check rather than the key.
    interval: Duration = Field(default=30.0, gt=0)
    timeout: Duration = Field(default=10.0, gt=0, description="total deadline of one run, retries included")
    retry: RetryConfig = Field(default_factory=RetryConfig)  # not a shared default: pydantic deep-copies those
    enabled: bool = True

    def targets(self) -> tuple[str, ...]:
        """The URLs the check's requests go to, as configured (a flow's templates as written): a reload that
        changes them, or the kind, points the check at another endpoint (alerts/stats.py ``retarget``)."""
        raise NotImplementedError(f"{type(self).__name__} does not say where its requests go")

    @cached_property
    def target_fingerprint(self) -> str:
        """Where the check points, as a short digest of its kind and ``targets``: the same in every process and
        version, so replicas compare it (a result travelling to its integration's owner carries the one of the
        check that ran, monitor/cluster/result_codec.py). A digest, never the text: a URL may carry
        credentials or a secret in its query."""
        where = json.dumps([kind_of(self), list(self.targets())], separators=(",", ":"))
        return hashlib.blake2b(where.encode(), digest_size=8, person=b"im-target").hexdigest()


def kind_of(check: CheckConfigBase) -> str:
    """The ``kind`` tag of a check config (declared by each kind's subclass, not by the base)."""
    return str(getattr(check, "kind", "unknown"))


def internal_failure(
    integration: str, check: CheckConfigBase, exc: Exception, started: float, redactor: Redactor
) -> CheckResult:
    """The failed run of a probe that raised instead of returning a result (a bug in the probe, or in a library
    it runs on: the scheduler and the ``probe`` command record it so): class ``internal``, the exception named
    in the (redacted) detail."""
    elapsed = time.time() - started
    message = redactor.text(str(exc)).replace("\n", " ")[:200]
    return CheckResult(
        integration=integration, check=check.name, kind=kind_of(check), ok=False, error_class=ErrorClass.INTERNAL,
        detail=f"internal: the probe raised {type(exc).__name__}" + (f": {message}" if message else ""),
        started_at=started, duration=elapsed, total_duration=elapsed, attempt_classes=(ErrorClass.INTERNAL,),
    )


def retargets(prior: CheckConfigBase, check: CheckConfigBase) -> bool:
    """The check ``prior`` was is pointed at another endpoint as ``check`` (another kind, other request URLs):
    what its runs told of the old endpoint (a certificate's expiry, a status code) is not about the new one."""
    return prior is not check and prior.target_fingerprint != check.target_fingerprint
