"""One voice per incident across replicas (issue 10): a replica that lost the ownership of an integration
without knowing it cannot send. Three daemons (real processes) share a private redis-server and a
loopback Slack; the owner of the failing integration has its first post answered with a 429 (so it holds
the notification in its lane), is paused (SIGSTOP) past its lease, another replica takes the integration
over and posts, and when the paused one resumes (SIGCONT) its fencing token is no longer current: it
sends nothing. And an owner paused while its post is under way (Slack answers it late) cannot, once
resumed, overwrite the new owner's Slack thread record: the resolve still lands in the new owner's
thread."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_slack import TOKEN, FakeSlack, Reply
from fleet import EXE, Fleet, Replica
from needs import missing
from redis_servers import OwnRedis
from targets import Reply as TargetReply
from targets import Target
from waiting import NO_ANSWER, until

HEARTBEAT = 0.3
TTL = 2.0
RETRY_AFTER = 8  # seconds the paused owner's lane waits after the 429: it resumes long after the takeover
LATE_ANSWER = 10.0  # seconds Slack takes to answer the paused owner's post: the takeover comes first


def fleet_config(target: Target, redis_url: str, slack: FakeSlack) -> str:
    return f"""
monitor:
  redis_url: {redis_url}
  jitter: 0
  evaluation_interval: 1s
  shutdown_grace: 2s
  cluster: {{heartbeat: {int(HEARTBEAT * 1000)}ms, ttl: {TTL:g}s}}
integrations:
  acme:
    checks:
      - {{name: api, kind: http, url: '{target.url("/api")}', interval: 1s, timeout: 1s}}
    alerts:
      probe_down: {{consecutive_failures: 2, keep_firing_for: 0s}}
      error_rate: {{enabled: false}}
      latency: {{enabled: false}}
alerting:
  group_wait: 0s
  group_interval: 1s
  self_health: {{enabled: false}}
  slack: {{token: "{TOKEN}", channel: "#alerts", base_url: "{slack.api_url}", timeout: 60s}}
"""


@pytest.fixture
async def fleet(request: pytest.FixtureRequest, tmp_path: Path, target: Target, own_redis: OwnRedis,
                slack: FakeSlack) -> AsyncIterator[Fleet]:
    if not EXE.exists():
        missing(f"console script {EXE} not installed (pip install -e .)")
    await own_redis.start()
    config = tmp_path / "monitor.yaml"
    config.write_text(fleet_config(target, own_redis.url, slack))
    fleet = Fleet(config=config, logs=tmp_path)
    request.node.process_logs = fleet.log_tail
    yield fleet
    await fleet.close()


async def the_owner_of_acme(fleet: Fleet, target: Target) -> Replica:
    """Three replicas settled, acme healthy: the one that owns it (to be paused)."""
    target.route("/api", TargetReply(json={"ok": True}))
    await asyncio.gather(*(fleet.start(name) for name in ("r0", "r1", "r2")))
    await fleet.settled({"r0", "r1", "r2"})
    owner = (await fleet.replicas["r0"].status())["integrations"]["acme"]["owner"]
    return fleet.replicas[owner]


async def test_a_paused_owner_resumed_after_a_takeover_sends_nothing(
    fleet: Fleet, target: Target, slack: FakeSlack
) -> None:
    stale = await the_owner_of_acme(fleet, target)
    owner = stale.name

    slack.then(Reply(status=429, retry_after=str(RETRY_AFTER), only="chat.postMessage"))
    target.route("/api", TargetReply(status=503, body="down"))
    await until(lambda: slack.calls("chat.postMessage"), "the owner's first post (answered 429)")
    stale.signal(signal.SIGSTOP)  # holding the notification in its lane
    others = {"r0", "r1", "r2"} - {owner}
    await fleet.settled(others, within=TTL + 10)
    await until(lambda: slack.delivered("chat.postMessage"), "the new owner's post")

    stale.signal(signal.SIGCONT)

    async def refused() -> bool:
        lanes = (await stale.status())["components"]["notifiers"]["notifiers"]
        return bool(lanes["slack"]["fenced"] >= 1)

    await until(refused, f"{owner} to have its stale notification refused", within=RETRY_AFTER + 15,
                ignoring=NO_ANSWER)
    await fleet.settled({"r0", "r1", "r2"}, within=TTL + 10)
    await fleet.evaluated(2)  # every replica judged and notified after the rejoin (group_interval: 1 s)
    top_level = [r for r in slack.delivered("chat.postMessage") if not r.body.get("thread_ts")]
    assert len(top_level) == 1, [r.body.get("text") for r in top_level]
    assert len(slack.calls("chat.postMessage")) == 2  # the 429 and the new owner's post: nothing from the stale one
    assert "refused: another replica owns its integration now" in stale.log.read_text()


async def test_an_owner_paused_mid_send_cannot_overwrite_the_new_owners_thread_record(
    fleet: Fleet, target: Target, slack: FakeSlack
) -> None:
    stale = await the_owner_of_acme(fleet, target)
    owner = stale.name

    slack.then(Reply(delay=LATE_ANSWER, only="chat.postMessage"))  # the owner's post: answered late
    target.route("/api", TargetReply(status=503, body="down"))
    await until(lambda: slack.calls("chat.postMessage"), "the owner's post to reach Slack")
    stale.signal(signal.SIGSTOP)  # its send under way
    others = {"r0", "r1", "r2"} - {owner}
    await fleet.settled(others, within=TTL + 10)
    await until(lambda: len(slack.delivered("chat.postMessage")),
                "the new owner's post, and the paused owner's answered", holds=lambda n: n >= 2,
                within=LATE_ANSWER + 20)
    stale.signal(signal.SIGCONT)  # it reads Slack's answer and writes the thread record under its old token

    def refused() -> bool:
        return "slack thread store: the record of group acme not written" in stale.log.read_text()

    await until(refused, f"{owner}'s thread record refused")
    target.route("/api", TargetReply(json={"ok": True}))
    await until(lambda: [r for r in slack.delivered("chat.postMessage") if r.body.get("thread_ts")], "the resolve")
    await fleet.evaluated(2)  # every replica has evaluated the recovery, and said what it had to
    # Two posts (the paused owner's came too late to be stopped; the new owner's), and the resolve is a reply
    # in a thread: had the paused owner's record replaced the new owner's, the new owner would have found
    # another incident's message there and posted its resolve as a third message.
    top_level = [ts for ts, m in slack.messages.items() if m.thread_ts is None]
    replies = [m.thread_ts for m in slack.messages.values() if m.thread_ts is not None]
    assert len(top_level) == 2, [m.text for m in slack.messages.values()]
    assert len(replies) == 1 and replies[0] in top_level
