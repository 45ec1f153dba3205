"""Alert latency, end to end: from the first failing probe to the notifier's request to Slack.

Real pieces: the daemon (``integration-monitor run``) as a child process with the default alert rules,
a real aiohttp target that flips from 200 to failing, and the local fake Slack of the tests
(tests/fake_slack.py) as the notifier's Slack. Target and fake Slack live in this process, so both
timestamps come from one clock: when the target answered the first failing request, and when the fake
Slack received the ``chat.postMessage`` that names the integration.

Two failure modes, a few trials each (one integration per trial, so the trials do not share a group):
  auth   the target answers 401: ``probe_down`` fires on the first failure (auth_immediately)
  5xx    the target answers 503: ``probe_down`` fires at the 3rd consecutive failure
Target (issue 7): latency ≤ the rule's ``for`` (0 s by default) + one evaluation interval + 1 s, counted
from the run at which the rule's condition holds (the first failing run for auth, the 3rd for 5xx).
``group_wait`` is 0 here (30 s by default: a deliberate wait, added on top; set it in the config).
Usage: python bench/alert_latency.py [--trials 3] [--interval 1] [--evaluation-interval 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from common import daemon_command, free_port  # noqa: E402
from fake_slack import TOKEN, FakeSlack  # noqa: E402

MODES = {"auth": 401, "5xx": 503}
CONSECUTIVE = {"auth": 1, "5xx": 3}  # failing runs before probe_down's condition holds (default rule)


class FlippingTarget:
    """``/t/{name}`` answers 200 with a JSON body until ``fail(name, status)``; remembers when (monotonic)
    it sent each failing answer."""

    def __init__(self) -> None:
        self.failing: dict[str, int] = {}
        self.failures: dict[str, list[float]] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/t/{name}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = int(self.runner.addresses[0][1])

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        status = self.failing.get(name)
        if status is None:
            return web.json_response({"ok": True})
        self.failures.setdefault(name, []).append(time.monotonic())
        return web.json_response({"error": "flipped"}, status=status)

    def fail(self, name: str, status: int) -> None:
        self.failing[name] = status


def config_text(target: int, slack_api: str, port: int, names: list[str], interval: float, evaluation: float) -> str:
    lines = [
        "monitor:",
        f'  listen: "127.0.0.1:{port}"',
        f"  evaluation_interval: {evaluation:g}s",
        "  log_level: WARNING",
        "integrations:",
    ]
    for name in names:
        lines += [
            f"  {name}:",
            "    checks:",
            f'      - {{name: ping, kind: http, url: "http://127.0.0.1:{target}/t/{name}", interval: {interval:g}s,'
            " timeout: 2s, retry: {attempts: 1}}",
        ]
    lines += [
        "alerting:",
        f'  slack: {{token: "{TOKEN}", channel: "#alerts", base_url: "{slack_api}"}}',
        "  group_wait: 0s",
    ]
    return "\n".join(lines) + "\n"


def first_post_naming(slack: FakeSlack, name: str) -> float | None:
    for record in slack.calls("chat.postMessage"):
        if name in json.dumps(record.body):
            return record.at
    return None


async def trial(target: FlippingTarget, slack: FakeSlack, name: str, mode: str) -> tuple[float, float]:
    """(latency from the first failing run, latency from the run where the condition holds)."""
    target.fail(name, MODES[mode])
    while True:
        sent = first_post_naming(slack, name)
        failures = target.failures.get(name, [])
        if sent is not None and failures:
            condition = failures[CONSECUTIVE[mode] - 1] if len(failures) >= CONSECUTIVE[mode] else failures[-1]
            return sent - failures[0], sent - condition
        await asyncio.sleep(0.02)


async def main_async(args: argparse.Namespace) -> int:
    target, slack = FlippingTarget(), FakeSlack()
    await target.start()
    await slack.start()
    names = [f"vendor_{mode}_{i}" for mode in MODES for i in range(args.trials)]
    port = free_port()
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    budget = args.evaluation_interval + 1.0  # the rule's `for` is 0 s by default
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(config_text(target.port, slack.api_url, port, names, args.interval, args.evaluation_interval))
        log = Path(tmp) / "daemon.log"
        command = daemon_command(cfg)
        with log.open("w") as err:
            proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL, stderr=err)
        try:
            await asyncio.sleep(max(3.0, 2 * args.interval))  # every check has run OK at least once
            if proc.returncode is not None:
                print(f"the daemon exited with {proc.returncode}:\n{log.read_text()}")
                return 1
            for mode in MODES:
                for i in range(args.trials):
                    name = f"vendor_{mode}_{i}"
                    timeout = CONSECUTIVE[mode] * args.interval + budget + 20
                    try:
                        async with asyncio.timeout(timeout):
                            outcome = await trial(target, slack, name, mode)
                    except TimeoutError:
                        print(f"no Slack message about {name} within {timeout:.0f}s of its failure: is the alert "
                              "engine wired into the daemon (monitor.wiring.DEFAULT_COMPONENTS)?")
                        return 1
                    results[mode].append(outcome)
                    print(f"  {name}: {outcome[0] * 1000:.0f} ms from the first failure, "
                          f"{outcome[1] * 1000:.0f} ms from the condition", flush=True)
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(30):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            await slack.close()
            await target.close()
    print()
    print(f"check interval {args.interval:g}s, evaluation_interval {args.evaluation_interval:g}s, group_wait 0s, "
          f"default rules; target: ≤ for (0s) + evaluation interval + 1s = {budget:g}s from the condition")
    head = (
        f"{'failure':<10}{'runs to fire':>13}{'from 1st failure (median, max)':>32}"
        f"{'from condition (median, max)':>30}"
    )
    print(head)
    print("-" * len(head))
    met = True
    for mode, samples in results.items():
        first = [a for a, _ in samples]
        cond = [b for _, b in samples]
        met = met and max(cond) <= budget
        print(f"{mode:<10}{CONSECUTIVE[mode]:>13}{statistics.median(first):>24.2f}s {max(first):>5.2f}s"
              f"{statistics.median(cond):>22.2f}s {max(cond):>5.2f}s")
    print(f"target {'met' if met else 'NOT met'}")
    return 0 if met else 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0, help="check interval, seconds")
    parser.add_argument(
        "--evaluation-interval", type=float, default=15.0, help="monitor.evaluation_interval, seconds (its default)"
    )
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
