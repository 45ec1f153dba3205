"""Multi-step flow probe (``kind: flow``): create a test object, read it back, delete it — the health
questions one request cannot answer.

The steps run in order within one deadline, the check's ``timeout``; ``cleanup_timeout`` of it is kept
for the cleanup steps, which run after the steps whatever happened (a cleanup step whose references
name a step that never ran is skipped, not failed). Each step is one call (``checks.call``: auth, retries
with the step's or the flow's ``retry``, the same classes as an ``http`` / ``graphql`` check) with its
references filled in from the steps before it (``checks.flow_templates``).

The result is one ``CheckResult``: the first failing step's class, with the step named in the detail
(``missing_field: step create: $.id``); a failing cleanup fails a flow whose steps passed (a leaked
test object is worth knowing about) and is appended to the detail of one that failed already. Phases
are summed over the steps, attempts counted over all of them, and each step's own outcome, phases and
duration are in ``CheckResult.steps``. Values a response handed over that go into a later request's
headers or query are masked like any credential (they may be one: a session token).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from multidict import CIMultiDict
from yarl import URL

from checks.base import ProbeContext
from checks.call import CallOutcome, perform_call, probe_session
from checks.flow_config import FlowCheckConfig, FlowStep, GraphqlStep, HttpStep
from checks.flow_templates import REFERENCE, StepValues, Unresolved, render
from checks.graphql import GraphqlInspector
from checks.http_config import RequestPlan
from integration_kit.classify import Failure, parse_json
from integration_kit.errors import ErrorClass
from integration_kit.graphql import request_body
from integration_kit.ratelimit_headers import rate_limit_fields
from integration_kit.results import CheckResult, StepResult
from integration_kit.token_cache import TokenCache

__all__ = ["FlowCheckConfig", "probe"]


@dataclass(slots=True)
class _Ran:
    step: FlowStep
    cleanup: bool
    call: CallOutcome | None  # None: the step never sent a request (a reference could not be filled in)
    failure: Failure | None
    skipped: bool = False


async def probe(check: FlowCheckConfig, ctx: ProbeContext) -> CheckResult:
    """One run of a flow: the steps in order, then the cleanup steps, inside ``check.timeout``."""
    started_at = time.time()
    if ctx.tokens is None:  # a direct call, outside the daemon: the steps still share one token
        ctx = replace(ctx, tokens=TokenCache(on_secret=ctx.redactor.rotate))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    deadline = t0 + check.timeout
    steps_deadline = deadline - check.cleanup_budget
    seen: dict[str, StepValues] = {}
    ran: list[_Ran] = []
    session, own = probe_session(ctx)
    try:
        for step in check.steps:
            outcome = await _run_step(check, step, ctx, session, seen, steps_deadline, cleanup=False)
            ran.append(outcome)
            if outcome.failure is not None:
                break
        for step in check.cleanup:
            ran.append(await _run_step(check, step, ctx, session, seen, deadline, cleanup=True))
    finally:
        if own is not None:
            await own.close()
    return _result(check, ctx, ran, started_at, loop.time() - t0)


async def _run_step(
    check: FlowCheckConfig, step: FlowStep, ctx: ProbeContext, session: Any, seen: dict[str, StepValues],
    deadline: float, *, cleanup: bool,
) -> _Ran:
    try:
        plan = _plan(check, step, ctx, seen)
    except Unresolved as exc:
        if cleanup:  # it cleans up after a step that never got that far: nothing to clean
            return _Ran(step=step, cleanup=True, call=None, failure=None, skipped=True)
        return _Ran(step=step, cleanup=False, call=None, failure=exc.failure)
    inspector = GraphqlInspector(step) if isinstance(step, GraphqlStep) else None
    call = await perform_call(
        step, ctx, session, plan=plan, policy=(step.retry or check.retry).policy, deadline=deadline,
        auth=step.auth if step.auth is not None else check.auth,
        inspect_body=inspector.inspect if inspector else None, after_attempt=inspector.amend if inspector else None,
    )
    outcome = call.outcome
    failure = None if outcome.error_class is None else (outcome.error_class, outcome.detail)
    if failure is None:
        body = call.run.body or b""
        document, malformed = parse_json(body) if body else (None, (ErrorClass.MALFORMED_JSON, ""))
        seen[step.name] = StepValues(status=outcome.status, headers=CIMultiDict(call.run.headers or {}),
                                     document=document, is_json=malformed is None)
    return _Ran(step=step, cleanup=cleanup, call=call, failure=failure)


def _plan(check: FlowCheckConfig, step: FlowStep, ctx: ProbeContext, seen: Mapping[str, StepValues]) -> RequestPlan:
    """The step's request with its references filled in (raises ``Unresolved``)."""
    url = URL(render(step.url, seen, url=True))
    if url.scheme not in ("http", "https") or not url.host:
        raise Unresolved((ErrorClass.ASSERTION_FAILED,
                          f"assertion_failed: the URL {step.url} is not an absolute http(s) URL once filled in"))
    raw_headers = {k: v.get_secret_value() for k, v in step.headers.items()}
    raw_params = {k: v.get_secret_value() for k, v in step.url_params().items()}
    headers = {k: str(render(v, seen)) for k, v in raw_headers.items()}
    params = {k: str(render(v, seen)) for k, v in raw_params.items()}
    handed = [headers[k] for k, v in raw_headers.items() if REFERENCE.search(v)]
    handed += [params[k] for k, v in raw_params.items() if REFERENCE.search(v)]
    if handed:  # values from a response used as credentials: mask them from now on
        ctx.redactor.rotate(f"flow:{ctx.integration}:{check.name}:{step.name}", handed)
    if isinstance(step, GraphqlStep):
        data = request_body(step.query, render(step.variables, seen), step.operation_name)
        return step.plan("POST", data, "application/json", url=url, headers=headers, params=params)
    assert isinstance(step, HttpStep)
    if step.json_body is not None:
        data = json.dumps(render(step.json_body, seen), separators=(",", ":")).encode()
        return step.plan(step.method, data, "application/json", url=url, headers=headers, params=params)
    body = None if step.body is None else str(render(step.body, seen)).encode()
    return step.plan(step.method, body, url=url, headers=headers, params=params)


def _step_result(r: _Ran) -> StepResult:
    call = r.call
    failure = r.failure
    return StepResult(
        name=r.step.name, cleanup=r.cleanup, ok=failure is None, skipped=r.skipped,
        error_class=failure[0] if failure else None, detail=failure[1] if failure else "",
        status_code=call.outcome.status if call else None, duration=call.total if call else 0.0,
        attempts=len(call.classes) if call else 0, phases=dict(call.outcome.timing.phases()) if call else {},
    )


def _named(failure: Failure, r: _Ran) -> str:
    """``<class>: step <name>: <what>`` (or ``cleanup <name>``) from the step's own detail."""
    error_class, detail = failure
    where = f"{'cleanup' if r.cleanup else 'step'} {r.step.name}"
    return f"{error_class}: {where}: {detail.removeprefix(f'{error_class}: ')}"


def _result(check: FlowCheckConfig, ctx: ProbeContext, ran: list[_Ran], started_at: float, total: float) -> CheckResult:
    failed = next((r for r in ran if r.failure is not None and not r.cleanup), None)
    cleanup_failed = next((r for r in ran if r.failure is not None and r.cleanup), None)
    shown = failed or cleanup_failed  # the step whose request and response the result shows
    detail = ""
    if failed is not None and failed.failure is not None:
        detail = _named(failed.failure, failed)
        if cleanup_failed is not None and cleanup_failed.failure is not None:
            detail += f" (cleanup {cleanup_failed.step.name} also failed: {cleanup_failed.failure[0]})"
    elif cleanup_failed is not None and cleanup_failed.failure is not None:
        detail = _named(cleanup_failed.failure, cleanup_failed)
    calls = [r.call for r in ran if r.call is not None]
    phases: dict[str, float] = {}
    for call in calls:
        for phase, seconds in call.outcome.timing.phases().items():
            phases[phase] = phases.get(phase, 0.0) + seconds
    last_call = shown.call if shown is not None and shown.call is not None else (calls[-1] if calls else None)
    main_calls = [r.call for r in ran if r.call is not None and not r.cleanup]
    quota_from = main_calls[-1] if main_calls else None
    expiries = [c.run.tls_expiry for c in calls if c.run.tls_expiry is not None]
    error_class = None
    if shown is not None and shown.failure is not None:
        error_class = shown.failure[0]
    return CheckResult(
        integration=ctx.integration,
        check=check.name,
        kind=check.kind,
        ok=shown is None,
        error_class=error_class,
        detail=ctx.redactor.text(detail),
        started_at=started_at,
        duration=total,
        total_duration=total,
        attempts=max(1, sum(len(c.classes) for c in calls)),
        attempt_classes=tuple(cls for c in calls for cls in c.classes),
        status_code=last_call.outcome.status if last_call is not None else None,
        phases=phases,
        tls_expiry=min(expiries) if expiries else None,
        request=shown.call.request() if shown is not None and shown.call is not None else None,
        response_excerpt=shown.call.excerpt(ctx) if shown is not None and shown.call is not None else None,
        rate_limit_headers=(
            rate_limit_fields(quota_from.run.headers) if quota_from is not None and quota_from.run.headers else ()
        ),
        steps=tuple(_step_result(r) for r in ran),
    )
