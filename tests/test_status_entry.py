"""A check's /api/status entry after any sequence of runs: what the runs say, every text that may carry a
secret redacted. The entry keeps the last result and renders it when read; this is the document it must
render (the one the entry built field by field at every run before)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from result_strategies import SECRET, result_fields

from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.status import CheckStatus


def expected(runs: list[CheckResult], redactor: Redactor) -> dict[str, Any]:
    last = runs[-1]
    failed = [r for r in runs if not r.ok]
    trailing = len(runs) - max((i + 1 for i, r in enumerate(runs) if r.ok), default=0)
    expiries = [r.tls_expiry for r in runs if r.tls_expiry is not None]
    failure = failed[-1] if failed else None
    return {
        "kind": last.kind,
        "runs": len(runs),
        "ok": last.ok,
        "error_class": last.error_class.value if last.error_class else None,
        "detail": redactor.text(last.detail),
        "started_at": last.started_at,
        "duration_seconds": last.duration,
        "total_duration_seconds": last.total_duration,
        "attempts": last.attempts,
        "attempt_classes": [c.value if c else None for c in last.attempt_classes],
        "status_code": last.status_code,
        "phases": dict(last.phases),
        "steps": [{"name": s.name, "cleanup": s.cleanup, "ok": s.ok, "skipped": s.skipped,
                   "error_class": s.error_class.value if s.error_class else None,
                   "detail": redactor.text(s.detail), "status_code": s.status_code, "duration_seconds": s.duration,
                   "attempts": s.attempts, "phases": dict(s.phases)} for s in last.steps],
        "tls_cert_expiry": expiries[-1] if expiries else None,
        "last_success_at": next((r.started_at for r in reversed(runs) if r.ok), None),
        "last_failure_at": failure.started_at if failure else None,
        "consecutive_failures": trailing,
        "last_failure": None if failure is None else {
            "error_class": failure.error_class.value if failure.error_class else None,
            "detail": redactor.text(failure.detail),
            "request": None if failure.request is None else {
                "method": failure.request.method, "url": redactor.url(failure.request.url),
                "headers": redactor.headers(failure.request.headers),
                "body_excerpt": None if failure.request.body_excerpt is None
                else redactor.text(failure.request.body_excerpt),
            },
            "response_excerpt": None if failure.response_excerpt is None else redactor.text(failure.response_excerpt),
        },
    }


@settings(max_examples=200)
@given(st.lists(result_fields, min_size=1, max_size=6))
def test_the_entry_renders_what_the_runs_say(runs: list[dict[str, Any]]) -> None:
    redactor = Redactor([SECRET])
    results = [CheckResult(**r) for r in runs]
    entry = CheckStatus(integration="acme", check="api")
    for result in results:
        entry.update(result, redactor)
    doc = entry.as_dict()
    assert doc == expected(results, redactor)
    assert entry.ok is results[-1].ok


def test_an_entry_that_never_ran() -> None:
    doc = CheckStatus(integration="acme", check="api").as_dict()
    assert doc["runs"] == 0 and doc["ok"] is None and doc["kind"] == "" and doc["attempt_classes"] == []
    assert doc["phases"] == {} and doc["steps"] == [] and doc["last_failure"] is None
