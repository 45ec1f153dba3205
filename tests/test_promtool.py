"""deploy/prometheus passes Prometheus' own checks: `promtool check rules|config` and `promtool test rules`.

promtool comes from Debian's `prometheus` package (scripts/test installs it). Without it these tests
fail under CI and are skipped, visibly, elsewhere.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from needs import need_binary

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = DEPLOY / "rules" / "integration-monitor.rules.yml"
RULE_TESTS = DEPLOY / "rules" / "integration-monitor.rules.test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return need_binary("promtool", "Debian package `prometheus`")


def run(promtool: str, *args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_check_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests(promtool: str) -> None:
    result = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_check_scrape_config(promtool: str, tmp_path: Path) -> None:
    # The example config loads its rules from /etc/prometheus/rules (the docker-compose mount):
    # check a copy that points at the rules in the repo, so the rule files are checked with it.
    config = (DEPLOY / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules/*.rules.yml" in config
    copy = tmp_path / "prometheus.yml"
    copy.write_text(config.replace("/etc/prometheus/rules/", f"{RULES.parent}/"))
    result = run(promtool, "check", "config", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_rule_tests_fail_when_a_threshold_changes(promtool: str, tmp_path: Path) -> None:
    """The unit tests pin the thresholds: moving the quota warning from 80 % to 85 % must break them."""
    rules, warning = RULES.read_text(), "integration_quota:usage_ratio:last >= 0.80"
    assert warning in rules
    (tmp_path / RULES.name).write_text(rules.replace(warning, "integration_quota:usage_ratio:last >= 0.85"))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    result = run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "IntegrationQuotaWarning" in result.stdout + result.stderr
