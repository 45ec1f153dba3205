"""Block Kit builder: content, Slack's limits whatever the input, redaction, mrkdwn escaping."""

from __future__ import annotations

import json
import time

from fake_slack import block_kit_problems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.message import BLOCKS_MAX, HEADER_MAX, build_message, fallback_text, render_text
from alerts.model import Alert, AlertStatus, Notification, Severity
from integration_kit.redact import Redactor

NOW = 1_790_000_000.0
CANARY = "sk_live_CANARY0123456789secret"


def make_alert(i: int = 0, *, status: AlertStatus = AlertStatus.FIRING, **kw: object) -> Alert:
    base: dict[str, object] = {
        "key": f"stripe/error_rate/check{i}",
        "integration": "stripe",
        "alert": "error_rate",
        "severity": Severity.CRITICAL,
        "status": status,
        "summary": f"error rate 12% on check{i} (6 of 50 probes failed in 5m)",
        "check": f"check{i}",
        "started_at": NOW - 600,
        "resolved_at": NOW if status is AlertStatus.RESOLVED else None,
        "details": {"Error rate": "12% over 5m (threshold 5%)", "Samples": "50"},
        "error_classes": {"http_5xx": 5, "timeout": 1},
        "last_request": "GET https://api.stripe.com/v1/balance -> 503",
        "response_excerpt": '{"error": {"type": "api_error", "message": "try again"}}',
        "notes": "Stripe answers 503 during its maintenance windows.\nIdempotency conflicts give 409.",
        "runbook_url": "https://wiki.example.com/runbooks/stripe",
    }
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


def note(*alerts: Alert, key: str = "stripe") -> Notification:
    return Notification(group_key=key, alerts=alerts, created_at=NOW)


def all_text(message: object) -> str:
    return json.dumps(message.blocks, ensure_ascii=False) + message.text  # type: ignore[attr-defined]


def test_single_alert_carries_everything_an_on_call_needs() -> None:
    message = build_message(note(make_alert()), now=NOW)
    assert block_kit_problems(message.blocks) == []
    header = message.blocks[0]
    assert header["type"] == "header"
    assert header["text"]["text"].startswith("🔴 stripe: error rate 12% on check0")
    body = all_text(message)
    for expected in (
        "*Integration*\\nstripe",
        "*Check*\\ncheck0",
        "http_5xx ×5, timeout ×1",
        "GET https://api.stripe.com/v1/balance",
        "try again",
        "Stripe answers 503 during its maintenance windows",
        "https://wiki.example.com/runbooks/stripe",
        "*Error rate*\\n12% over 5m (threshold 5%)",
    ):
        assert expected in body, expected
    assert message.text.startswith("🔴 stripe: error rate 12% on check0")


def test_quota_alert_shows_used_limit_reset_and_exhaustion() -> None:
    alert = make_alert(
        alert="quota",
        check=None,
        quota="api",
        severity=Severity.WARNING,
        summary="quota api at 83% (8,300 of 10,000)",
        details={"Used": "8,300 / 10,000 (83%)", "Resets in": "12m", "Exhausted in": "about 20m at the current rate"},
        error_classes={},
    )
    body = all_text(build_message(note(alert), now=NOW))
    assert "🟠 stripe: quota api at 83%" in body
    assert "*Quota*\\napi" in body
    for expected in ("8,300 / 10,000 (83%)", "*Resets in*\\n12m", "about 20m at the current rate"):
        assert expected in body


def test_resolved_variant() -> None:
    message = build_message(note(make_alert(status=AlertStatus.RESOLVED)), now=NOW)
    assert message.blocks[0]["text"]["text"].startswith("✅ Resolved — stripe: ")
    assert "resolved after 10m" in all_text(message)
    assert "*1* resolved" in all_text(message)


def test_200_failing_checks_stay_within_slack_limits() -> None:
    alerts = [make_alert(i, details={f"detail {k}": "x" * 50 for k in range(15)}) for i in range(200)]
    message = build_message(note(*alerts), now=NOW)
    assert block_kit_problems(message.blocks) == []
    assert len(message.blocks) <= BLOCKS_MAX
    assert len(message.blocks[0]["text"]["text"]) <= HEADER_MAX
    assert "(+199 more firing)" in message.blocks[0]["text"]["text"]
    body = all_text(message)
    assert "180 more not shown in detail" in body
    assert "more" in body.split("not shown in detail")[-1]  # the overflow list itself is cut with "…and N more"
    assert "…and " in body
    assert len(message.text) <= 3000 and "…and " in message.text
    # ≤ 10 fields even with 20 details: the last says how many were left out
    section = message.blocks[2]
    assert len(section["fields"]) == 10 and section["fields"][-1]["text"].startswith("…and ")


def test_huge_strings_are_cut_not_rejected() -> None:
    big = make_alert(
        summary="S" * 10_000,
        response_excerpt="E" * 50_000 + "```" * 100,
        notes="N" * 20_000,
        last_request="GET https://x/" + "q" * 5000,
        details={"k" * 3000: "v" * 5000},
        runbook_url="https://wiki.example.com/" + "r" * 4000,
    )
    message = build_message(note(big, key="g" * 4000), now=NOW)
    assert message.blocks[0]["type"] == "header"  # the real builder, not its plain-text safety net
    assert block_kit_problems(message.blocks) == []
    assert "…" in message.blocks[0]["text"]["text"]


def test_secret_never_reaches_the_message() -> None:
    redactor = Redactor([CANARY])
    alert = make_alert(
        summary=f"auth failed with key {CANARY}",
        details={"Key": CANARY, CANARY: "label"},
        last_request=f"GET https://api.stripe.com/v1/balance?key={CANARY}",
        response_excerpt=f'{{"echo": "{CANARY}"}}',
        notes=f"old key was {CANARY}",
        error_classes={"auth": 3},
    )
    notification = note(alert, key=f"stripe-{CANARY}")
    message = build_message(notification, redactor, now=NOW)
    assert CANARY not in all_text(message)
    assert "[REDACTED]" in all_text(message)
    assert CANARY not in render_text(notification, redactor)
    assert CANARY not in fallback_text(notification, redactor)


def test_mrkdwn_injection_is_escaped() -> None:
    alert = make_alert(summary="boom <!channel> <https://evil.example|click> & co", response_excerpt="<@U123>")
    message = build_message(note(alert), now=NOW)
    sections = json.dumps([b for b in message.blocks if b["type"] != "header"])
    assert "<!channel>" not in sections and "&lt;!channel&gt;" in sections
    assert "<@U123>" not in sections
    assert "<!channel>" not in message.text  # the fallback text is mrkdwn too


def test_mixed_notification_orders_firing_critical_first() -> None:
    alerts = (
        make_alert(1, status=AlertStatus.RESOLVED),
        make_alert(2, severity=Severity.WARNING, summary="latency p95 3s on check2"),
        make_alert(3, summary="probe down on check3"),
    )
    message = build_message(note(*alerts), now=NOW)
    assert message.blocks[0]["text"]["text"].startswith("🔴 stripe: probe down on check3 (+1 more firing)")
    texts = [b["text"]["text"] for b in message.blocks if b["type"] == "section" and "fields" in b]
    assert ["check3" in texts[0], "check2" in texts[1], "check1" in texts[2]] == [True, True, True]
    assert "*2* firing · *1* resolved" in all_text(message)


def test_empty_and_test_notifications_still_make_valid_messages() -> None:
    assert block_kit_problems(build_message(note(), now=NOW).blocks) == []
    test = Notification(group_key="test:1", alerts=(), created_at=NOW, is_test=True)
    message = build_message(test, now=NOW)
    assert block_kit_problems(message.blocks) == []
    assert "Test alert" in message.blocks[0]["text"]["text"]


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=400)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(min_value=0, max_value=260),
    summary=_text,
    excerpt=_text,
    detail_count=st.integers(min_value=0, max_value=30),
    integrations=st.integers(min_value=1, max_value=40),
)
def test_any_notification_fits_slack_limits(
    count: int, summary: str, excerpt: str, detail_count: int, integrations: int
) -> None:
    alerts = tuple(
        make_alert(
            i,
            integration=f"vendor{i % integrations}",
            summary=summary * (i % 3 + 1),
            response_excerpt=excerpt * 20,
            details={f"d{k}{summary[:5]}": excerpt for k in range(detail_count)},
            status=AlertStatus.RESOLVED if i % 4 == 0 else AlertStatus.FIRING,
        )
        for i in range(count)
    )
    message = build_message(note(*alerts), now=time.time())
    assert message.blocks[0]["type"] == "header"  # the real builder, not its plain-text safety net
    assert block_kit_problems(message.blocks) == []
    assert 0 < len(message.text) <= 3000


def test_runbook_link_keeps_its_query_but_not_a_credential() -> None:
    """The request URL masks every query value; a runbook link is not a request: it must still work."""
    alert = make_alert(runbook_url="https://wiki.example.com/pages/viewpage.action?pageId=123&token=abc12345")
    body = all_text(build_message(note(alert), now=NOW))
    assert "viewpage.action?pageId=123&token=[REDACTED]" in body and "abc12345" not in body
