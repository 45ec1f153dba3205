"""The shipped deploy/alertmanager/alertmanager.yml: amtool accepts it, and its routes keep one page per
incident — the monitor's own alerts go to Slack, Prometheus' copies of the same rules are dropped, and
what only Prometheus can see still pages. The `rule` labels of deploy/prometheus/rules must name the
monitor's rules for that to hold, so this is checked against the code's own list of rules.

Needs ``amtool`` (Debian package ``prometheus-alertmanager``): fails without it under CI, skips otherwise.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from alertmanager_support import amtool_binary

from alerts.config import SelfHealthConfig
from alerts.rules import RULES
from alerts.rules.webhook_silence import DUPLICATES
from alerts.self_health import HealthSample, evaluate

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
PROMETHEUS_RULES = ROOT / "deploy" / "prometheus" / "rules" / "integration-monitor.rules.yml"
# The monitor cannot see these itself: replicas that are not in one cluster (monitor_replicas_apart); a
# component failing or a loop crashing (the monitor's own health, told by Prometheus from its metrics: the
# engine may be the one failing).
PROMETHEUS_ONLY = {"monitor_down", "monitor_config_reload_failed", "monitor_replicas_apart",
                   "monitor_component_failing", "monitor_component_crashing"}


def monitor_rules() -> set[str]:
    """Every `rule` label value the monitor's own alerts can carry."""
    sample = HealthSample(redis_up=False, notifiers={"slack": True}, scheduler_lag=60.0)
    return set(RULES) | {DUPLICATES} | {c.alert for c in evaluate(sample, SelfHealthConfig())}


def receiver(*labels: str) -> str:
    out = subprocess.run(
        [amtool_binary(), "config", "routes", "test", f"--config.file={CONFIG}", *labels],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return out.stdout.strip()


def prometheus_alerts() -> list[dict[str, str]]:
    doc = yaml.safe_load(PROMETHEUS_RULES.read_text())
    return [{"alertname": r["alert"], **r["labels"]} for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_amtool_accepts_the_shipped_config() -> None:
    out = subprocess.run([amtool_binary(), "check-config", str(CONFIG)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_prometheus_rules_carry_sender_and_a_rule_the_monitor_knows() -> None:
    known = monitor_rules() | PROMETHEUS_ONLY
    for alert in prometheus_alerts():
        assert alert.get("sender") == "prometheus", alert
        assert alert.get("rule") in known, alert


@pytest.mark.parametrize("rule", sorted(monitor_rules()))
def test_the_monitors_alerts_page(rule: str) -> None:
    assert receiver("sender=integration-monitor", f"rule={rule}", "integration=shop", "severity=critical") == (
        "slack-integrations"
    )


def test_prometheus_copies_are_dropped_but_what_only_prometheus_sees_pages() -> None:
    for alert in prometheus_alerts():
        labels = [f"{k}={v}" for k, v in alert.items()] + ["integration=shop", "notifier=slack"]
        want = "slack-integrations" if alert["rule"] in PROMETHEUS_ONLY else "drop"
        assert receiver(*labels) == want, alert
    # The monitor failing to reach Alertmanager can only be told by Prometheus.
    assert receiver("sender=prometheus", "rule=monitor_notifier_failing", "notifier=alertmanager") == (
        "slack-integrations"
    )
