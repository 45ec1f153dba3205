"""Alert rules: one module per rule kind, each a pure function ``evaluate(RuleInput) -> Iterable[Condition]``
(``alerts/rules/base.py``).

``RULES`` below is the registry and the one list of rule kinds: a rule is named after its module
(``alerts/rules/webhook_silence.py`` → rule ``webhook_silence``), and its settings are the field of the
same name in ``AlertRulesConfig`` (``enabled``, ``for``, ``keep_firing_for`` and its own). A new kind is
a module here, a line in ``RULES`` and a field in ``AlertRulesConfig``.
"""

from __future__ import annotations

from alerts.rules import error_rate, latency, probe_down, quota, tls_expiry, traffic_silence, webhook_silence
from alerts.rules.base import Condition, RuleFn, RuleInput, alert_key
from alerts.rules.webhook_silence import DUPLICATES

RULES: dict[str, RuleFn] = {
    "error_rate": error_rate.evaluate,
    "latency": latency.evaluate,
    "probe_down": probe_down.evaluate,
    "quota": quota.evaluate,
    "tls_expiry": tls_expiry.evaluate,
    "webhook_silence": webhook_silence.evaluate,
    "traffic_silence": traffic_silence.evaluate,
}

# Every alert name the rules raise (webhook_silence raises webhook_duplicates too): what a silence may name,
# besides "*" and the monitor's own alerts (monitor_*).
ALERT_NAMES: tuple[str, ...] = tuple(sorted((*RULES, DUPLICATES)))


def unknown_alert(name: str) -> str | None:
    """Why a silence naming alert ``name`` would mute nothing ever, or None when it names an alert."""
    if name == "*" or name in ALERT_NAMES or name.startswith("monitor_"):
        return None
    return f"unknown alert {name!r} (alerts: {', '.join(ALERT_NAMES)}, monitor_*)"


__all__ = ["ALERT_NAMES", "RULES", "Condition", "RuleFn", "RuleInput", "alert_key", "unknown_alert"]
