"""``integration-monitor send-test-alert -c FILE``: one test message through every configured notifier.

Prints one line per notifier (``slack: ok — posted to channel C123 (ts …)`` or ``slack: FAILED — …``)
and exits 0 when all delivered, 1 when one failed, 2 when the config is invalid.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "send-test-alert", help="send one test message through every configured notifier and print the result"
    )
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config file")
    parser.set_defaults(func=cmd_send_test_alert)


def cmd_send_test_alert(args: argparse.Namespace) -> int:
    from alerts.delivery import send_test_alert
    from monitor.cli import EXIT_CONFIG, load_or_report, run_async

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    return run_async(send_test_alert(config))
