"""HTTP probe (``kind: http``): one request, with retries, against an integration's API.

``probe(check, ctx)`` never raises because the target failed: every outcome is a ``CheckResult`` with
exactly one error class (README, "Checks") and a short detail. The parts: the config model
(``checks.http_config``), the call with its auth and retries (``checks.call``), one attempt
(``checks.http_attempt``), the classification of what an attempt saw (``integration_kit.classify``) and
the retries (``integration_kit.retry``).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from checks.base import ProbeContext
from checks.call import USER_AGENT, make_session, single_call_probe
from checks.http_attempt import EXCERPT_BYTES
from checks.http_config import Expectation, HttpCheckConfig
from checks.json_assertions import JsonAssertion, JsonType
from integration_kit.results import CheckResult

__all__ = [
    "EXCERPT_BYTES", "USER_AGENT", "Expectation", "HttpCheckConfig", "JsonAssertion", "JsonType", "make_session",
    "probe",
]


def probe(check: HttpCheckConfig, ctx: ProbeContext) -> Coroutine[Any, Any, CheckResult]:
    """One scheduled run of an HTTP check: attempts with retries inside ``check.timeout``. (The call's
    coroutine itself, not an ``async def`` around it: see ``checks.run_probe``.)"""
    return single_call_probe(
        check, ctx, kind=check.kind, name=check.name, plan=check.request_plan, policy=check.retry.policy,
        budget=check.timeout, auth=check.auth,
    )
