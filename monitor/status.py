"""What /api/status shows about each check: the last run and the history that matters when paged.

One ``CheckStatus`` per check, updated in place on every run. It keeps the last result itself and renders
its plain fields (kind, times, attempts, classes, status, phases) when /api/status is read: recording a run
copies nothing it does not have to. What could carry a secret (details, a flow's steps, the failed request
and response) is redacted when it is recorded, as before (the recorder's redactor), so rendering never
needs the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult, RequestSummary, StepResult


@dataclass(slots=True)
class CheckStatus:
    integration: str
    check: str
    runs: int = 0
    last: CheckResult | None = None  # None: never ran
    detail: str = ""  # the last result's, redacted
    # A flow's steps of the last run, redacted; every other check shares the empty tuple (a list each: 56 B).
    steps: tuple[dict[str, Any], ...] = ()
    tls_expiry: float | None = None
    last_success_at: float | None = None
    last_failure_at: float | None = None
    consecutive_failures: int = 0
    # Of the last failed run, kept after the check recovers: it is what someone debugging wants.
    last_failure_class: str | None = None
    last_failure_detail: str = ""
    last_failure_request: dict[str, Any] | None = None
    last_failure_response: str | None = None

    @property
    def ok(self) -> bool | None:
        return None if self.last is None else self.last.ok

    def update(self, result: CheckResult, redactor: Redactor) -> None:
        self.runs += 1
        self.last = result
        self.detail = redactor.text(result.detail) if result.detail else ""
        if result.steps or self.steps:
            self.steps = _steps(result.steps, redactor)
        if result.tls_expiry is not None:
            self.tls_expiry = result.tls_expiry
        if result.ok:
            self.last_success_at = result.started_at
            self.consecutive_failures = 0
            return
        self.last_failure_at = result.started_at
        self.consecutive_failures += 1
        self.last_failure_class = result.error_class.value if result.error_class is not None else None
        self.last_failure_detail = self.detail
        self.last_failure_request = _request(result.request, redactor)
        self.last_failure_response = (
            redactor.text(result.response_excerpt) if result.response_excerpt is not None else None
        )

    def as_dict(self) -> dict[str, Any]:
        last = self.last
        return {
            "kind": "" if last is None else last.kind,
            "runs": self.runs,
            "ok": self.ok,
            "error_class": None if last is None or last.error_class is None else last.error_class.value,
            "detail": self.detail,
            "started_at": None if last is None else last.started_at,
            "duration_seconds": None if last is None else last.duration,
            "total_duration_seconds": None if last is None else last.total_duration,
            "attempts": 0 if last is None else last.attempts,
            "attempt_classes": [] if last is None else [c.value if c is not None else None
                                                        for c in last.attempt_classes],
            "status_code": None if last is None else last.status_code,
            "phases": {} if last is None else dict(last.phases),
            "steps": list(self.steps),
            "tls_cert_expiry": self.tls_expiry,
            "last_success_at": self.last_success_at,
            "last_failure_at": self.last_failure_at,
            "consecutive_failures": self.consecutive_failures,
            "last_failure": None
            if self.last_failure_at is None
            else {
                "error_class": self.last_failure_class,
                "detail": self.last_failure_detail,
                "request": self.last_failure_request,
                "response_excerpt": self.last_failure_response,
            },
        }


def _steps(steps: tuple[StepResult, ...], redactor: Redactor) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"name": s.name, "cleanup": s.cleanup, "ok": s.ok, "skipped": s.skipped,
         "error_class": s.error_class.value if s.error_class is not None else None,
         "detail": redactor.text(s.detail), "status_code": s.status_code, "duration_seconds": s.duration,
         "attempts": s.attempts, "phases": dict(s.phases)}
        for s in steps
    )


def _request(request: RequestSummary | None, redactor: Redactor) -> dict[str, Any] | None:
    """The probe already redacted the request; redact again here so a probe bug cannot leak a secret."""
    if request is None:
        return None
    return {
        "method": request.method,
        "url": redactor.url(request.url),
        "headers": redactor.headers(request.headers),
        "body_excerpt": redactor.text(request.body_excerpt) if request.body_excerpt is not None else None,
    }


class StatusStore:
    """Per-check status, keyed by (integration, check)."""

    __slots__ = ("_checks",)

    def __init__(self) -> None:
        self._checks: dict[tuple[str, str], CheckStatus] = {}

    def entry(self, integration: str, check: str) -> CheckStatus:
        key = (integration, check)
        status = self._checks.get(key)
        if status is None:
            status = self._checks[key] = CheckStatus(integration=integration, check=check)
        return status

    def get(self, integration: str, check: str) -> CheckStatus | None:
        return self._checks.get((integration, check))

    def forget(self, integration: str, check: str) -> None:
        self._checks.pop((integration, check), None)

    def retarget(self, integration: str, check: str) -> None:
        """The check's requests go elsewhere now (a reload): the certificate expiry seen so far is the old
        endpoint's, and a run that meets no certificate (plain HTTP, a failure before TLS) would keep it
        for ever. The last run stays as it is (dated; the next run replaces all of it), and so does the
        history (last success and failure, the streak), as the alert engine keeps the check's windows."""
        status = self._checks.get((integration, check))
        if status is not None:
            status.tls_expiry = None

    def keys(self) -> list[tuple[str, str]]:
        return list(self._checks)

    def by_integration(self) -> dict[str, dict[str, CheckStatus]]:
        out: dict[str, dict[str, CheckStatus]] = {}
        for (integration, check), status in self._checks.items():
            out.setdefault(integration, {})[check] = status
        return out


def results_on(owner: str | None, address: str | None, integration: str, check: str) -> dict[str, Any]:
    """Where a check's results are, for /api/status on a replica that does not own its integration: the
    owner (None while no member is known to own it), its address and the URL of the check's status there."""
    path = f"/api/status/{quote(integration, safe='')}/{quote(check, safe='')}"
    return {"replica": owner, "address": address, "url": None if address is None else f"http://{address}{path}"}


# What /api/status leaves out with ``monitor.status_details: false``: what a vendor answered, the headers
# and body of the request sent (method and redacted URL stay), and Redis key names.
DETAIL_FIELDS = frozenset({"response_excerpt", "headers", "body_excerpt", "busiest_key"})


def without_details(node: Any) -> Any:
    """A copy of a status document with every ``DETAIL_FIELDS`` value set to None, wherever it sits
    (components' sections included)."""
    if isinstance(node, dict):
        return {k: None if k in DETAIL_FIELDS else without_details(v) for k, v in node.items()}
    if isinstance(node, list):
        return [without_details(v) for v in node]
    return node
