"""The probe-down alert of a check goes on counting failed runs in a row across a handover, as its
``integration_probe_consecutive_failures`` does (monitor/cluster/streaks.py): two daemons (real processes)
share a private redis-server, the owner of the failing integration is killed (SIGKILL), and the survivor
takes it over.

The vendor fails until the kill, and from then on only as many more times as the victim's stored count
falls short of the rule's N: the survivor counts fewer than N failed runs of its own (the runs after the
kill, and those it drains from the victim's stream are among them), then successes. Only the count
continued from the victim's makes ``probe_down`` fire. Before the fix the metric continued the
count and the alert engine started again from zero: the probe-down alert of a check failing for minutes was
held back for N more failed runs after every handover (and never came if the vendor recovered meanwhile).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
from fake_slack import TOKEN, FakeSlack
from fleet import Fleet, fleet_on
from redis_servers import OwnRedis
from targets import Reply, Target
from waiting import until

CONSECUTIVE = 6  # the rule's N
STORED = 2  # failed runs in a row the victim has stored when it is killed (at least; 4 runs short of N)
STREAK_KEY = "im:cluster:streak:pay"
IN_A_ROW = re.compile(r"down, (\d+) failed runs in a row")


def config(target: Target, slack: FakeSlack, redis_url: str) -> str:
    return json.dumps({
        "monitor": {"redis_url": redis_url, "evaluation_interval": "1s", "jitter": 0, "shutdown_grace": "2s",
                    "cluster": {"heartbeat": "300ms", "ttl": "2s"}},
        "integrations": {"pay": {
            "checks": [{"name": "c", "kind": "http", "url": target.url("/pay"), "interval": "2s", "timeout": "1s"}],
            "alerts": {"probe_down": {"consecutive_failures": CONSECUTIVE},
                       "error_rate": {"enabled": False}, "latency": {"enabled": False}},
        }},
        "alerting": {"slack": {"token": TOKEN, "channel": "#alerts", "base_url": slack.api_url},
                     "group_wait": "0s"},
    })


@pytest.fixture
async def fleet(
    request: pytest.FixtureRequest, tmp_path: Path, target: Target, slack: FakeSlack, own_redis: OwnRedis
) -> AsyncIterator[Fleet]:
    async with fleet_on(own_redis, config(target, slack, own_redis.url), request, tmp_path) as started:
        yield started


async def test_the_new_owner_pages_on_the_failed_runs_in_a_row_it_continued(
    fleet: Fleet, target: Target, slack: FakeSlack, own_redis: OwnRedis
) -> None:
    target.route("/pay", Reply(status=404, body="gone"))
    await fleet.start("r0")
    await fleet.start("r1")
    await fleet.settled({"r0", "r1"})
    victim = (await fleet.replicas["r0"].status())["integrations"]["pay"]["owner"]
    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        async def stored() -> int:
            count = await client.hget(STREAK_KEY, "c")
            return int(count) if count is not None else 0

        before = await until(stored, f"{victim} to store pay/c failing {STORED} times in a row",
                             holds=lambda count: count >= STORED)
        assert before < CONSECUTIVE and not slack.calls("chat.postMessage"), "the victim paged before its kill"
        await fleet.kill(victim)
        # From here on the vendor fails N - before more times, then recovers: the survivor, which counts these
        # at most (a run the victim made after `before` was read took a failure of the old script), never
        # counts N on its own.
        failures = [Reply(status=404, body="gone")] * (CONSECUTIVE - before)
        target.route("/pay", *failures, *[Reply(json={"ok": True})] * 1000)

        def paged() -> list[str]:
            return [p.body["text"] for p in slack.delivered("chat.postMessage") if IN_A_ROW.search(p.body["text"])]

        texts = await until(paged, "the survivor to page pay/c down")
        counted = IN_A_ROW.search(texts[0])
        assert counted is not None and int(counted[1]) >= CONSECUTIVE, texts[0]
    finally:
        await client.aclose()
