"""Alert evaluation cost and latency.

1. CPU time of one ``AlertEngine.evaluate()`` with N checks that each have six hours of 30 s history
   (all default rules, memory store).
2. Latency from a failing probe result to the hand-off to the notifier queue, with the real evaluation
   loop running (``evaluation_interval`` and ``group_wait`` as given): what a user waits beyond the
   probe itself. A newly failing check wakes the loop early, but evaluations are at least 1 s apart;
   each sample fails right after the previous resolve's evaluation, so it shows that worst case
   (the first sample, with no evaluation just before, shows the best).

Prints one JSON line.  Usage: python -m bench.alert_eval [--checks 200] [--interval 1s] [--group-wait 0s]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import yaml

from alerts.engine import AlertEngine
from alerts.model import Notification
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config


def make_config(checks: int, interval: str, group_wait: str) -> Config:
    per = 10
    integrations: dict[str, Any] = {}
    for i in range(0, checks, per):
        integrations[f"vendor{i // per}"] = {
            "checks": [{"name": f"c{j}", "kind": "http", "url": "https://x.test/", "interval": "30s",
                        "expect": {"max_latency": "1s"}} for j in range(min(per, checks - i))],
            "alerts": {"probe_down": {"consecutive_failures": 1, "keep_firing_for": 0}},
        }
    return parse_config(yaml.safe_dump({
        "monitor": {"evaluation_interval": interval},
        "integrations": integrations,
        "alerting": {"group_wait": group_wait, "group_interval": "0s", "flapping": {"max_transitions": 1000}},
    }), env={})


def result(integration: str, check: str, at: float, ok: bool) -> CheckResult:
    return CheckResult(integration=integration, check=check, kind="http", ok=ok,
                       error_class=None if ok else ErrorClass.HTTP_5XX, detail="", started_at=at, duration=0.2,
                       total_duration=0.2, status_code=200 if ok else 503)


class Sink:
    def __init__(self) -> None:
        self.handed: list[tuple[float, Notification]] = []
        self.arrived = asyncio.Event()

    async def submit(self, notification: Notification) -> None:
        self.handed.append((time.time(), notification))
        self.arrived.set()

    async def wait_for(self, count: int) -> None:
        while len(self.handed) < count:
            self.arrived.clear()
            await self.arrived.wait()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    cfg = make_config(args.checks, args.interval, args.group_wait)
    metrics, redactor = Metrics(), Redactor()
    sink = Sink()
    engine = AlertEngine(cfg, metrics=metrics, redactor=redactor, sink=sink, autorun=False)
    now = time.time()
    for integration, check in cfg.iter_checks():
        for k in range(720):
            engine.on_result(result(integration, check.name, now - 21600 + k * 30, True))
    await engine.start()
    cpu: list[float] = []
    for _ in range(args.rounds):
        started = time.process_time()
        await engine.evaluate()
        cpu.append(time.process_time() - started)
    await engine.close()

    # Latency with the loop running.
    engine = AlertEngine(cfg, metrics=metrics, redactor=redactor, sink=sink)
    await engine.start()
    latencies = []
    integration, check = next(cfg.iter_checks())
    for _ in range(args.samples):
        sink.handed.clear()
        failed_at = time.time()
        engine.on_result(result(integration, check.name, failed_at, False))
        await sink.wait_for(1)
        latencies.append(sink.handed[0][0] - failed_at)
        engine.on_result(result(integration, check.name, time.time(), True))
        await sink.wait_for(2)  # the resolve
    await engine.close()
    return {
        "checks": args.checks,
        "evaluate_cpu_ms_median": round(statistics.median(cpu) * 1000, 1),
        "evaluate_cpu_ms_max": round(max(cpu) * 1000, 1),
        "evaluation_interval": args.interval,
        "group_wait": args.group_wait,
        "latency_s_median": round(statistics.median(latencies), 3),
        "latency_s_max": round(max(latencies), 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--group-wait", default="0s")
    parser.add_argument("--samples", type=int, default=5)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
