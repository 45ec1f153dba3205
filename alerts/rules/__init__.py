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

RULES: dict[str, RuleFn] = {
    "error_rate": error_rate.evaluate,
    "latency": latency.evaluate,
    "probe_down": probe_down.evaluate,
    "quota": quota.evaluate,
    "tls_expiry": tls_expiry.evaluate,
    "webhook_silence": webhook_silence.evaluate,
    "traffic_silence": traffic_silence.evaluate,
}

__all__ = ["RULES", "Condition", "RuleFn", "RuleInput", "alert_key"]
