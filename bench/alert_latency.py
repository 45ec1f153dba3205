"""Alert latency, end to end, both ways: first failing probe → the alert in Slack, and first healthy probe
→ the resolve in its thread, with the default settings — beside the figure the defaults promise.

Real pieces: the daemon (``integration-monitor run``) as a child process with the default config (check
interval 30 s, ``evaluation_interval`` 15 s, ``group_wait`` 30 s, default rules and retries), a real
aiohttp target that flips from 200 to failing and back, and the local fake Slack of the tests
(tests/fake_slack.py) as the notifier's Slack (bot mode: the alert is a post, the resolve a reply in its
thread). Target and fake Slack live in this process, so every timestamp comes from one clock: when the
target answered the first failing request, when the fake Slack received the post naming the integration,
when the target answered the first healthy request, and when the resolve arrived.

The peer in the same run is the model (bench/alert_model.py): the daemon's own alert engine on a
simulated clock with the same settings, over several phases of runs against evaluations — what the
defaults promise, with no I/O and no delivery. The daemon should land within the model's range plus
delivery (pacing: about one Slack message a second).

Two failure modes, ``--trials`` integrations each, all in one daemon (one integration per trial, so they do
not share a notification group), started a few seconds apart:
  auth   the target answers 401: ``probe_down`` fires on the first failure (auth_immediately)
  5xx    the target answers 503: ``probe_down`` fires at the 3rd consecutive failed run
At the real defaults a run takes about 4 minutes. ``--scale N`` divides every timing setting by N (check
interval, evaluation interval, group_wait/group_interval, each rule's for/keep_firing_for/windows; the
engine's 1 s early-wake gap and Slack's pacing stay) for a quick look.

Usage: python bench/alert_latency.py [--trials 3] [--scale 1]
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
from typing import Any

import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from alert_model import DEFAULT_INTERVAL, model_ranges, scaled_settings, span  # noqa: E402
from common import daemon_command, free_port  # noqa: E402
from fake_slack import TOKEN, FakeSlack  # noqa: E402

MODES = {"auth": 401, "5xx": 503}
SCENARIO = {"auth": "probe_down_auth", "5xx": "probe_down_5xx"}  # the model's scenario of each mode
STAGGER = 3.0  # seconds between trial starts (Slack paces one channel at about a message a second)


class FlippingTarget:
    """``/t/{name}`` answers 200 with a JSON body, or ``fail(name, status)``'s status until ``heal(name)``;
    remembers when (monotonic) it sent the first failing answer and the first healthy one after a heal."""

    def __init__(self) -> None:
        self.failing: dict[str, int] = {}
        self.first_failure: dict[str, float] = {}
        self.healed: set[str] = set()
        self.first_healthy: dict[str, float] = {}
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
            if name in self.healed:
                self.first_healthy.setdefault(name, time.monotonic())
            return web.json_response({"ok": True})
        self.first_failure.setdefault(name, time.monotonic())
        return web.json_response({"error": "flipped"}, status=status)

    def fail(self, name: str, status: int) -> None:
        self.failing[name] = status

    def heal(self, name: str) -> None:
        self.healed.add(name)
        self.failing.pop(name, None)


def config_text(target: int, slack_api: str, port: int, names: list[str], scale: float) -> str:
    """The daemon's config: the defaults (divided by ``scale``), loopback target and Slack."""
    monitor, alerting, alerts = scaled_settings(scale)
    check: dict[str, Any] = {"kind": "http", "timeout": "2s"}
    if scale != 1:
        check["interval"] = DEFAULT_INTERVAL / scale
    config = {
        "monitor": {"listen": f"127.0.0.1:{port}", "log_level": "WARNING", **monitor},
        "integrations": {
            name: {"checks": [{"name": "ping", "url": f"http://127.0.0.1:{target}/t/{name}", **check}],
                   **({"alerts": alerts} if alerts else {})}
            for name in names
        },
        "alerting": {"slack": {"token": TOKEN, "channel": "#alerts", "base_url": slack_api}, **alerting},
    }
    return yaml.safe_dump(config, sort_keys=False)


def first_post(slack: FakeSlack, name: str, *, thread: bool) -> float | None:
    """When the fake Slack received the first post naming ``name``: top-level, or (``thread``) a reply."""
    for record in slack.calls("chat.postMessage"):
        if ("thread_ts" in record.body) == thread and name in json.dumps(record.body):
            return record.at
    return None


async def until(probe: Any, what: str, within: float) -> float:
    """Poll ``probe`` until it gives a time (the fake Slack records; nothing to wait on)."""
    deadline = time.monotonic() + within
    while True:
        at = probe()
        if at is not None:
            return float(at)
        if time.monotonic() > deadline:
            raise SystemExit(f"no {what} within {within:.0f}s: is the alert engine wired into the daemon?")
        await asyncio.sleep(0.02)


async def trial(target: FlippingTarget, slack: FakeSlack, name: str, mode: str, delay: float,
                scale: float) -> tuple[float, float]:
    """(first failing run → alert, first healthy run → resolve), in seconds."""
    await asyncio.sleep(delay)
    budget = 600.0 / scale + 60
    target.fail(name, MODES[mode])
    fired = await until(lambda: first_post(slack, name, thread=False), f"alert about {name}", budget)
    target.heal(name)
    resolved = await until(lambda: first_post(slack, name, thread=True), f"resolve of {name}", budget)
    fire = fired - target.first_failure[name]
    resolve = resolved - target.first_healthy[name]
    print(f"  {name}: alert {fire:.1f} s after its first failing run, resolve {resolve:.1f} s after its first "
          f"healthy run", flush=True)
    return fire, resolve


async def measure(args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    target, slack = FlippingTarget(), FakeSlack()
    await target.start()
    await slack.start()
    names = {mode: [f"vendor_{mode}_{i}" for i in range(args.trials)] for mode in MODES}
    port = free_port()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "config.yaml"
            cfg.write_text(config_text(target.port, slack.api_url, port, [n for ns in names.values() for n in ns],
                                       args.scale))
            log = Path(tmp) / "daemon.log"
            with log.open("w") as err:
                proc = await asyncio.create_subprocess_exec(*daemon_command(cfg), stdout=subprocess.DEVNULL,
                                                            stderr=err)
            try:
                await asyncio.sleep(DEFAULT_INTERVAL / args.scale + 3)  # every check has run OK at least once
                if proc.returncode is not None:
                    raise SystemExit(f"the daemon exited with {proc.returncode}:\n{log.read_text()}")
                jobs = {
                    (mode, name): trial(target, slack, name, mode, STAGGER * i, args.scale)
                    for i, (mode, name) in enumerate((m, n) for m in MODES for n in names[m])
                }
                outcomes = await asyncio.gather(*jobs.values())
            finally:
                if proc.returncode is None:
                    proc.terminate()
                    try:
                        async with asyncio.timeout(30):
                            await proc.wait()
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
    finally:
        await slack.close()
        await target.close()
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for (mode, _), outcome in zip(jobs, outcomes, strict=True):
        results[mode].append(outcome)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3, help="integrations per failure mode")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="divide every timing setting by this (1: the real defaults, about 4 minutes)")
    parser.add_argument("--phases", type=int, default=8, help="phases the model runs each scenario at")
    args = parser.parse_args()
    results = asyncio.run(measure(args))
    model = asyncio.run(model_ranges([SCENARIO[m] for m in MODES], scale=args.scale, phases=args.phases))
    print()
    settings = "default settings" + (f" / {args.scale:g}" if args.scale != 1 else "")
    print(f"{settings}; daemon: median (min–max) of {args.trials} trials; model: the alert engine on a simulated "
          f"clock, median (min–max) over {args.phases} phases")
    head = f"{'failure':<8}{'alert: daemon':>22}{'model':>22}{'resolve: daemon':>22}{'model':>22}"
    print(head)
    print("-" * len(head))
    for mode, samples in results.items():
        fired, resolved = model[SCENARIO[mode]]
        print(f"{mode:<8}{span([f for f, _ in samples]):>22}{span(fired):>22}"
              f"{span([r for _, r in samples]):>22}{span(resolved):>22}")
    late = [
        mode for mode, samples in results.items()
        if statistics.median(f for f, _ in samples) > max(model[SCENARIO[mode]][0]) + 2
        or statistics.median(r for _, r in samples) > max(model[SCENARIO[mode]][1]) + 2
    ]
    print("daemon within the model's range + 2 s (delivery): " + ("yes" if not late else f"NO ({', '.join(late)})"))
    sys.exit(1 if late else 0)


if __name__ == "__main__":
    main()
