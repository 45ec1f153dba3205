"""Notification → Slack Block Kit message and plain text. Pure: no I/O, never raises on odd input.

Slack rejects a whole message (``invalid_blocks``) when one limit is broken, so every piece is fitted to
its limit here and overflow becomes "…and N more" instead of an error: header ≤ 150 characters, section
text ≤ 3,000, ≤ 10 fields of ≤ 2,000 each, ≤ 50 blocks. Every string that came from outside (summary,
details, request, response excerpt, notes) goes through the Redactor before it is placed, even though
the engine already redacted it: the message is the last stop before text leaves the process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from alerts.model import Alert, AlertStatus, Notification, Severity
from integration_kit.redact import Redactor

log = logging.getLogger(__name__)

HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
FIELDS_MAX = 10
BLOCKS_MAX = 50
FALLBACK_TEXT_MAX = 3000
BUTTON_TEXT_MAX = 75
URL_MAX = 3000
ACTIONS_ELEMENTS_MAX = 25

# Shown in detail (one section block each); the rest are listed one line each in an overflow section.
DETAILED_ALERTS_MAX = 20
EXCERPT_MAX = 600
REQUEST_MAX = 300
NOTES_MAX = 1500
ELLIPSIS = "…"

_SEVERITY_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
_ICON = {Severity.CRITICAL: "🔴", Severity.WARNING: "🟠", Severity.INFO: "🔵"}
_RESOLVED_ICON = "✅"
_TEST_ICON = "🧪"


@dataclass(frozen=True, slots=True, kw_only=True)
class SlackMessage:
    text: str  # plain-text fallback (notifications, screen readers, clients without blocks)
    blocks: list[dict[str, Any]]


def ordered_alerts(notification: Notification) -> list[Alert]:
    """Firing before resolved, critical first, then by key: the order a reader wants to scan."""
    return sorted(
        notification.alerts,
        key=lambda a: (a.status is not AlertStatus.FIRING, _SEVERITY_ORDER.get(a.severity, 9), a.key),
    )


def fit(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters ending in "…", never inside an ``&amp;``-style entity."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - len(ELLIPSIS))]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp <= 5:
        cut = cut[:amp]
    return cut + ELLIPSIS


def escape(text: str) -> str:
    """Slack mrkdwn control characters; also stops injected ``<!channel>`` mentions and fake links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code_block(text: str) -> str:
    # A ``` inside the excerpt would close the block early; a zero-width joiner keeps it readable.
    return "```" + escape(text).replace("```", "`\u200d``") + "```"


def header_line(notification: Notification, redactor: Redactor) -> str:
    """What is wrong, in one line (≤ 150 characters)."""
    alerts = ordered_alerts(notification)
    firing = notification.firing
    if notification.is_test:
        line = f"{_TEST_ICON} Test alert from integration-monitor"
    elif not alerts:
        line = "integration-monitor: empty notification"
    elif firing:
        top = alerts[0]
        icon = _ICON.get(top.severity, "🔴")
        more = f" (+{len(firing) - 1} more firing)" if len(firing) > 1 else ""
        line = f"{icon} {top.integration}: {top.summary}{more}"
    else:
        top = alerts[0]
        more = f" (+{len(alerts) - 1} more)" if len(alerts) > 1 else ""
        line = f"{_RESOLVED_ICON} Resolved — {top.integration}: {top.summary}{more}"
    return fit(redactor.text(" ".join(line.split())), HEADER_MAX)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d"


def _error_classes(alert: Alert) -> str:
    return ", ".join(f"{cls} ×{count}" for cls, count in alert.error_classes_by_count.items())


def _status_phrase(alert: Alert) -> str:
    if alert.status is AlertStatus.RESOLVED:
        if alert.resolved_at is not None and alert.started_at:
            return f"resolved after {_age(alert.resolved_at - alert.started_at)}"
        return "resolved"
    since = f" since {_when(alert.started_at)}" if alert.started_at else ""
    return ("flapping" if alert.flapping else "firing") + since


def _alert_text(alert: Alert, redactor: Redactor) -> str:
    """The mrkdwn body of one alert's section: summary, classes, last request, response excerpt."""
    icon = _RESOLVED_ICON if alert.status is AlertStatus.RESOLVED else _ICON.get(alert.severity, "🔴")
    lines = [f"{icon} *{escape(redactor.text(alert.summary))}*"]
    if alert.flapping:
        lines.append("_Flapping: state changed often in the last hour; quiet until it settles._")
    if alert.error_classes:
        lines.append(f"*Error classes:* {escape(redactor.text(_error_classes(alert)))}")
    if alert.last_request:
        request = fit(redactor.text(alert.last_request), REQUEST_MAX)
        shown = escape(request).replace("`", "'")
        lines.append(f"*Last failing request:* `{shown}`")
    body = "\n".join(lines)
    if alert.response_excerpt:
        excerpt = fit(redactor.text(alert.response_excerpt), EXCERPT_MAX)
        body += "\n*Response excerpt:*\n" + _code_block(excerpt)
    return fit(body, SECTION_TEXT_MAX)


def _alert_fields(alert: Alert, redactor: Redactor) -> list[str]:
    pairs: list[tuple[str, str]] = [("Integration", alert.integration)]
    if alert.check:
        pairs.append(("Check", alert.check))
    if alert.quota:
        pairs.append(("Quota", alert.quota))
    pairs.append(("Severity", str(alert.severity)))
    pairs.append(("Status", _status_phrase(alert)))
    pairs.extend(alert.details.items())
    fields = [
        fit(
            f"*{escape(redactor.text(str(label)))}*\n{escape(redactor.text(str(value))) or '-'}",
            FIELD_TEXT_MAX,
        )
        for label, value in pairs
    ]
    if len(fields) > FIELDS_MAX:
        hidden = len(fields) - (FIELDS_MAX - 1)
        fields = [*fields[: FIELDS_MAX - 1], f"…and {hidden} more"]
    return fields


def one_line(alert: Alert, redactor: Redactor) -> str:
    """``stripe/balance — error rate 12% (critical, firing)``: for overflow lists and plain text."""
    target = alert.check or alert.quota
    where = f"{alert.integration}/{target}" if target else alert.integration
    state = "resolved" if alert.status is AlertStatus.RESOLVED else ("flapping" if alert.flapping else "firing")
    return redactor.text(" ".join(f"{where} — {alert.summary} ({alert.severity}, {state})".split()))


def bounded_list(lines: Sequence[str], limit: int, *, prefix: str = "") -> str:
    """Join lines until ``limit`` characters; the remainder becomes one "…and N more" line."""
    out = prefix
    for i, line in enumerate(lines):
        candidate = out + ("\n" if out else "") + line
        rest = len(lines) - i - 1
        tail_room = len(f"\n…and {len(lines)} more") if rest else 0
        if len(candidate) + tail_room > limit:
            return fit(out + ("\n" if out else "") + f"…and {len(lines) - i} more", limit)
        out = candidate
    return out


def _notes_by_integration(alerts: Iterable[Alert]) -> dict[str, tuple[str | None, str | None]]:
    seen: dict[str, tuple[str | None, str | None]] = {}
    for alert in alerts:
        if alert.integration not in seen and (alert.notes or alert.runbook_url):
            seen[alert.integration] = (alert.notes, alert.runbook_url)
    return seen


def _button_url(url: str, redactor: Redactor) -> str | None:
    # A runbook link is not a request the product sent: keep its query (``?pageId=…``) working, mask
    # only what is known or named as a secret.
    url = redactor.text(url)
    return url if url.startswith(("https://", "http://")) and len(url) <= URL_MAX else None


def _tail_blocks(alerts: Sequence[Alert], redactor: Redactor, budget: int) -> list[Block]:
    """Notes (quirks) and runbook links, once per integration, within ``budget`` blocks."""
    blocks: list[Block] = []
    buttons: list[ButtonElement] = []
    notes = _notes_by_integration(alerts)
    for integration, (text, runbook) in notes.items():
        if text and len(blocks) < budget - 1:
            shown = escape(fit(redactor.text(text.strip()), NOTES_MAX))
            quoted = "\n".join("> " + line for line in shown.splitlines())
            body = f"*Notes for {escape(integration)}* (quirks the vendor docs don't tell)\n{quoted}"
            blocks.append(SectionBlock(text=MarkdownTextObject(text=fit(body, SECTION_TEXT_MAX))))
        url = _button_url(runbook, redactor) if runbook else None
        if url and len(buttons) < ACTIONS_ELEMENTS_MAX:
            label = fit(f"Runbook: {integration}", BUTTON_TEXT_MAX)
            buttons.append(
                ButtonElement(text=PlainTextObject(text=label), url=url, action_id=f"runbook-{len(buttons)}")
            )
    if buttons and len(blocks) < budget:
        blocks.append(ActionsBlock(elements=buttons))
    return blocks


def build_message(
    notification: Notification, redactor: Redactor | None = None, *, now: float | None = None
) -> SlackMessage:
    """Block Kit blocks + fallback text for one notification, within Slack's limits whatever its size."""
    redactor = redactor or Redactor()
    now = time.time() if now is None else now
    try:
        return _build(notification, redactor, now)
    except Exception:  # a bug here must not lose the alert: send the plain line instead
        log.exception("building the Slack message failed; sending the plain-text form")
        text = _slack_text(notification, redactor)
        return SlackMessage(text=text, blocks=[SectionBlock(text=MarkdownTextObject(text=text)).to_dict()])


def _build(notification: Notification, redactor: Redactor, now: float) -> SlackMessage:
    alerts = ordered_alerts(notification)
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text=header_line(notification, redactor), emoji=True))]
    firing, resolved = len(notification.firing), len(notification.resolved)
    parts = (f"*{firing}* firing" if firing else "", f"*{resolved}* resolved" if resolved else "")
    counts = " · ".join(p for p in parts if p)
    if notification.is_test:
        counts = "This is a test message: the notifier is configured correctly. No action needed."
    if counts:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=counts)]))

    tail = _tail_blocks(alerts, redactor, budget=6)
    group = redactor.text(notification.group_key)
    stamp = f"integration-monitor · group {group} · {_when(notification.created_at or now)}"
    footer = ContextBlock(elements=[MarkdownTextObject(text=fit(escape(stamp), SECTION_TEXT_MAX))])
    # Room left for per-alert sections, keeping one block for the overflow list and one divider.
    room = BLOCKS_MAX - len(blocks) - len(tail) - 1 - 2
    detailed = alerts[: max(0, min(DETAILED_ALERTS_MAX, room))]
    for alert in detailed:
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(text=_alert_text(alert, redactor)),
                fields=[MarkdownTextObject(text=f) for f in _alert_fields(alert, redactor)],
            )
        )
    rest = alerts[len(detailed) :]
    if rest:
        lines = [f"• {escape(one_line(a, redactor))}" for a in rest]
        text = bounded_list(lines, SECTION_TEXT_MAX, prefix=f"*{len(rest)} more not shown in detail:*")
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
    if tail:
        blocks.append(DividerBlock())
        blocks.extend(tail)
    blocks.append(footer)
    # slack_sdk's to_dict leaves a reference cycle per Block Kit object it turns into a dict (its recursive
    # inner function holds itself through its closure: a function, a cell, two tuples, ~310 B), freed by
    # the collector, not at once: 20 cycles (6 kB) for a one-alert message, 172 (54 kB) for twenty alerts
    # (gc.DEBUG_SAVEALL, slack_sdk 3.48). Left so: a message is built per notification, not per probe, and
    # avoiding them would mean writing Block Kit's JSON by hand, which slack_sdk is here to do.
    return SlackMessage(text=_slack_text(notification, redactor), blocks=[b.to_dict() for b in blocks[:BLOCKS_MAX]])


def _slack_text(notification: Notification, redactor: Redactor) -> str:
    # The top-level text is mrkdwn too (and is what push notifications show): escaped like the rest.
    return fit(escape(fallback_text(notification, redactor)), FALLBACK_TEXT_MAX)


def fallback_text(notification: Notification, redactor: Redactor | None = None) -> str:
    """Top-level ``text``: what phones show in the push notification. One header line + one per alert."""
    redactor = redactor or Redactor()
    lines = [one_line(a, redactor) for a in ordered_alerts(notification)]
    return bounded_list(lines, FALLBACK_TEXT_MAX, prefix=header_line(notification, redactor))


def render_text(notification: Notification, redactor: Redactor | None = None) -> str:
    """A readable multi-line block for the console notifier and the logs (same bounds as Slack)."""
    redactor = redactor or Redactor()
    out = [header_line(notification, redactor), f"  group: {redactor.text(notification.group_key)}"]
    alerts = ordered_alerts(notification)
    for alert in alerts[:DETAILED_ALERTS_MAX]:
        out.append(f"  - {one_line(alert, redactor)}")
        out.append(f"      status: {_status_phrase(alert)}")
        for label, value in alert.details.items():
            out.append(f"      {redactor.text(str(label))}: {redactor.text(str(value))}")
        if alert.error_classes:
            out.append(f"      error classes: {redactor.text(_error_classes(alert))}")
        if alert.last_request:
            out.append(f"      last failing request: {fit(redactor.text(alert.last_request), REQUEST_MAX)}")
        if alert.response_excerpt:
            excerpt = fit(redactor.text(alert.response_excerpt), EXCERPT_MAX)
            out.append("      response: " + excerpt.replace("\n", "\n                "))
    if len(alerts) > DETAILED_ALERTS_MAX:
        out.append(f"  …and {len(alerts) - DETAILED_ALERTS_MAX} more")
    for integration, (notes, runbook) in _notes_by_integration(alerts).items():
        if runbook:
            out.append(f"  runbook ({integration}): {redactor.text(runbook)}")
        if notes:
            text = fit(redactor.text(notes.strip()), NOTES_MAX)
            out.append(f"  notes ({integration}):\n" + "\n".join("    | " + line for line in text.splitlines()))
    return "\n".join(out)
