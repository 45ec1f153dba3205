"""What an alert tells: turning a rule's ``Condition`` plus the check's last failure into an ``Alert``,
and adding the integration's notes and runbook link when a notification is built. Every text that comes
from a probe goes through the redactor again (defence in depth) and is bounded."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from alerts.model import Alert, AlertStatus
from alerts.rules.base import Condition

if TYPE_CHECKING:
    from alerts.stats import CheckStats
    from integration_kit.redact import Redactor

log = logging.getLogger(__name__)

EXCERPT_MAX = 500
SUMMARY_MAX = 300
DETAIL_MAX = 500


def bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def alert_from_condition(cond: Condition, stats: CheckStats | None, redactor: Redactor,
                         runbook_url: str | None) -> Alert:
    last_request = response_excerpt = None
    first_failure_at = None
    if stats is not None and stats.last_failure is not None and stats.consecutive_failures > 0:
        failure = stats.last_failure
        if failure.request is not None:
            last_request = bounded(f"{failure.request.method} {redactor.url(failure.request.url)}", DETAIL_MAX)
        if failure.response_excerpt:
            response_excerpt = bounded(redactor.text(failure.response_excerpt), EXCERPT_MAX)
        first_failure_at = stats.first_failure_at
    return Alert(
        key=cond.key, integration=cond.integration, alert=cond.alert, severity=cond.severity,
        status=AlertStatus.FIRING, summary=bounded(redactor.text(cond.summary), SUMMARY_MAX), check=cond.check,
        quota=cond.quota, details={k: bounded(redactor.text(v), DETAIL_MAX) for k, v in cond.details.items()},
        error_classes=dict(cond.error_classes), last_request=last_request, response_excerpt=response_excerpt,
        runbook_url=runbook_url, first_failure_at=first_failure_at,
    )


class NotesReader:
    """Reads an integration's notes file, bounded, re-reading only when the file changed."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[float, str | None]] = {}

    def read(self, path: Path | None, limit: int) -> str | None:
        if path is None or limit <= 0:
            return None
        try:
            mtime = os.stat(path).st_mtime
        except OSError as exc:
            log.warning("notes file %s unreadable: %s", path, exc.strerror)
            return None
        cached = self._cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read(limit + 1)
        except OSError as exc:
            log.warning("notes file %s unreadable: %s", path, exc.strerror)
            return None
        text = text.strip()
        value = bounded(text, limit) if text else None
        self._cache[path] = (mtime, value)
        return value
