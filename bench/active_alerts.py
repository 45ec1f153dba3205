"""The alert rules of one evaluation at 50,000 checks (500 integrations × 100) with 1 % of the checks
failing (probe_down and error_rate active for each: 1,000 active alerts), no history: CPU time of the
rule calls with each integration handed only its own active alerts (as the engine does) and, side by
side, interleaved, with all of them (as before: the silence rules' scans were integrations × alerts).

Usage: python bench/active_alerts.py [--integrations 500] [--checks-per 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import yaml

from alerts.rules import RULES
from alerts.rules.base import RuleInput, alert_key
from alerts.stats import Stats
from monitor.settings import Config, parse_config


def rule_calls(cfg: Config, stats: Stats, active: dict[str, frozenset[str]], everyone: frozenset[str] | None) -> float:
    """CPU seconds of every rule on every integration; ``everyone``: hand each integration all keys."""
    started, now = time.process_time(), time.time()
    for name, icfg in cfg.integrations.items():
        own = active.get(name, frozenset()) if everyone is None else everyone
        inp = RuleInput(integration=name, config=icfg, stats=stats, quotas={}, now=now, active=own)
        for rule in RULES.values():
            list(rule(inp))
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--integrations", type=int, default=500)
    parser.add_argument("--checks-per", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    integrations = {
        f"vendor{i}": {"checks": [{"name": f"c{j}", "kind": "http", "url": "https://x.test/"}
                                  for j in range(args.checks_per)]}
        for i in range(args.integrations)
    }
    cfg = parse_config(yaml.safe_dump({"integrations": integrations}), env={})
    failing = max(1, args.checks_per // 100)  # the last check(s) of each integration
    active = {
        name: frozenset(alert_key(name, alert, f"c{j}", "critical") for alert in ("probe_down", "error_rate")
                        for j in range(args.checks_per - failing, args.checks_per))
        for name in integrations
    }
    everyone = frozenset().union(*active.values())
    stats = Stats(max_window=3600)
    own_cpu: list[float] = []
    all_cpu: list[float] = []
    for _ in range(args.rounds):
        own_cpu.append(rule_calls(cfg, stats, active, None))
        all_cpu.append(rule_calls(cfg, stats, active, everyone))
    checks = args.integrations * args.checks_per
    print(f"{checks:,} checks in {args.integrations} integrations, {len(everyone):,} active alerts; "
          f"CPU of one evaluation's rule calls, median (min–max) of {args.rounds}:")
    for label, cpu in (("own active alerts (now)", own_cpu), ("all active alerts (before)", all_cpu)):
        print(f"  {label}: {1000 * statistics.median(cpu):.0f} ms ({1000 * min(cpu):.0f}–{1000 * max(cpu):.0f})")


if __name__ == "__main__":
    main()
