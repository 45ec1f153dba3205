"""The parts of monitor/cluster/ one by one: rendezvous hashing, check timetables, the view, the membership
script on a real Redis, and the result codec."""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from needs import missing

from checks.base import CheckConfigBase, retargets
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult, RequestSummary, StepResult
from monitor.cluster.grid import GridTrigger
from monitor.cluster.membership import SETTLE_HEARTBEATS, Backoff, Membership
from monitor.cluster.placement import Assignment, fleet_fingerprint, shard_key
from monitor.cluster.rendezvous import owner, owners
from monitor.cluster.result_codec import decode_batch, encode_batch
from monitor.cluster.view import Member, active_ids, next_change, ran_until
from monitor.settings import parse_config
from monitor.settings.cluster import ClusterConfig, default_replica_id

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)

# ---- rendezvous ---------------------------------------------------------------------------------


@given(members=st.sets(ids, min_size=2, max_size=8), keys=st.lists(ids, min_size=1, max_size=50, unique=True),
       data=st.data())
def test_a_leaving_member_moves_only_its_own_keys_and_a_joining_one_takes_only_keys(
    members: set[str], keys: list[str], data: st.DataObject
) -> None:
    before = owners(keys, sorted(members))
    leaver = data.draw(st.sampled_from(sorted(members)))
    after = owners(keys, sorted(members - {leaver}))
    for key in keys:
        if before[key] != leaver:
            assert after[key] == before[key]
    # …and joining again gives the same placement back (it depends on the member set only).
    assert owners(keys, sorted(members)) == before
    assert owners(keys, list(reversed(sorted(members)))) == before


def test_rendezvous_is_the_same_in_every_process() -> None:
    # Fixed values: a change of the hash would move every check at the next rolling upgrade.
    assert owner("payments/balance", ["r0", "r1", "r2"]) == owner("payments/balance", ["r2", "r0", "r1"])
    assert [owner(f"k{i}", ["a", "b", "c"]) for i in range(6)] == ["a", "c", "a", "b", "c", "c"]
    assert owner("x", []) is None


def test_placement_spreads_checks_and_owns_integrations_whole() -> None:
    text = "integrations:\n" + "".join(
        f"  i{i}:\n    checks:\n" + "".join(
            f"      - {{name: c{j}, kind: http, url: 'https://x.example/{j}'}}\n" for j in range(30))
        for i in range(10)
    )
    config = parse_config(text, env={})
    members = ("r0", "r1", "r2")
    shares = [Assignment.compute(config, members, me) for me in members]
    assert sum(len(a.share) for a in shares) == 300 and all(80 <= len(a.share) <= 120 for a in shares)
    assert set().union(*(a.share for a in shares)) == {f"i{i}/c{j}" for i in range(10) for j in range(30)}
    owned = [a.owned(me) for a, me in zip(shares, members, strict=True)]
    assert sorted(i for o in owned for i in o) == sorted(f"i{i}" for i in range(10))
    # Alerts not grouped by integration: one owner for all of them.
    grouped = parse_config(text + "alerting: {group_by: [alert]}\n", env={})
    assert shard_key("i1", grouped.alerting.group_by) == shard_key("i2", grouped.alerting.group_by)
    owners_all = {Assignment.compute(grouped, members, "r0").integration_owner[f"i{i}"] for i in range(10)}
    assert len(owners_all) == 1


def test_fleet_fingerprint_follows_the_checks_and_never_sees_a_secret() -> None:
    base = ("integrations:\n  s:\n    checks:\n      - {name: a, kind: http, url: 'https://x.example/a', "
            "headers: {Authorization: 'Bearer sk_live_1'}}\n")
    hashed: list[str] = []

    def redact(text: str) -> str:
        hashed.append(Redactor(["sk_live_1"]).text(text))
        return hashed[-1]

    one = fleet_fingerprint(parse_config(base, env={}), redact)
    assert one == fleet_fingerprint(parse_config(base, env={}), redact)
    assert one != fleet_fingerprint(parse_config(base.replace("/a'", "/b'"), env={}), redact)
    assert one != fleet_fingerprint(parse_config(base + "monitor: {jitter: 0.3}\n", env={}), redact)
    assert hashed and not any("sk_live_1" in text for text in hashed)


def test_a_checks_target_fingerprint_follows_its_kind_and_urls_only_and_never_holds_them() -> None:
    """What a result travelling between replicas says of where its check pointed (monitor/cluster/result_codec.py):
    the same in every process for the same kind and URLs, another for another URL or kind, nothing else
    counts, and a URL's credentials or query secret are digested, never written."""
    base = ("integrations:\n  s:\n    checks:\n      - {name: a, kind: http, "
            "url: 'https://u:pw_1@x.example/a?key=k_2', interval: 5s}\n")

    def check(text: str) -> CheckConfigBase:
        found: CheckConfigBase = parse_config(text, env={}).integrations["s"].checks[0]
        return found

    one = check(base).target_fingerprint
    assert one == check(base.replace("5s", "9s")).target_fingerprint  # not where it points
    assert not retargets(check(base), check(base.replace("5s", "9s")))
    elsewhere = check(base.replace("/a?", "/b?"))
    assert elsewhere.target_fingerprint != one and retargets(check(base), elsewhere)
    graphql = check(base.replace("kind: http,", "kind: graphql, query: '{ a }',"))
    assert graphql.target_fingerprint != one and retargets(check(base), graphql)
    assert re.fullmatch(r"[0-9a-f]{16}", one)
    encoded = encode_batch([(CheckResult(integration="s", check="a", kind="http", ok=True, error_class=None,
                                         detail="", started_at=1.0, duration=0.1, total_duration=0.1), 0, one)],
                           Redactor())
    assert not any(secret in encoded for secret in ("pw_1", "k_2", "x.example"))


# ---- timetables ----------------------------------------------------------------------------------


@settings(max_examples=200)
@given(t=st.floats(min_value=1.6e9, max_value=2.2e9), interval=st.floats(min_value=0.01, max_value=86400),
       jitter=st.floats(min_value=0, max_value=1), key=ids)
def test_timetable_previous_and_next_bracket_any_instant(t: float, interval: float, jitter: float, key: str) -> None:
    grid = GridTrigger(key, interval, jitter)
    before, after = grid.previous(t), grid.next_after(t)
    assert before <= t < after
    assert grid.next_after(before) == after
    assert after - before >= interval * 0.1 - 1e-6


def test_timetable_is_shared_by_replicas_and_keeps_the_mean_interval() -> None:
    a, b = GridTrigger("pay/balance", 60, 0.1), GridTrigger("pay/balance", 60, 0.1)
    t = 1.8e9
    runs = []
    for _ in range(2000):
        t = a.next_after(t)
        runs.append(t)
        assert b.previous(t) == t
    gaps = [y - x for x, y in itertools.pairwise(runs)]
    assert abs(sum(gaps) / len(gaps) - 60) < 0.05
    assert min(gaps) >= 60 * 0.9 - 1e-6 and max(gaps) <= 60 * 1.1 + 1e-6
    assert len({round(GridTrigger(f"k{i}", 60, 0).phase) for i in range(100)}) > 40  # checks spread over the minute


def test_timetable_steps_past_a_run_rounded_to_microseconds() -> None:
    # APScheduler hands back the previous run as a datetime (microseconds): the next run must still be
    # the next one, or APScheduler loops on the same instant forever (found: the daemon hung).
    grid = GridTrigger("payments/c3", 0.2, 0.1)
    now = datetime.now(UTC)
    fire = grid.get_next_fire_time(None, now)
    assert fire is not None
    for _ in range(1000):
        following = grid.get_next_fire_time(fire, now)
        assert following is not None and following > fire
        fire = following


# ---- the view --------------------------------------------------------------------------------------


def member(name: str, *, active: float = 0.0, expires: float = 100.0, leaving: float | None = None,
           fleet: str = "f") -> Member:
    return Member(id=name, incarnation="x", joined_at=0.0, active_at=active, expires_at=expires, leaving_at=leaving,
                  fleet=fleet)


def test_view_counts_announced_joins_and_leaves_at_their_instant() -> None:
    members = [member("a"), member("b", active=10), member("c", leaving=20), member("d", expires=30),
               member("e", fleet="other")]
    assert active_ids(members, 5, "f") == ("a", "c", "d")
    assert active_ids(members, 15, "f") == ("a", "b", "c", "d")
    assert active_ids(members, 25, "f") == ("a", "b", "d")
    assert active_ids(members, 35, "f") == ("a", "b")
    assert next_change(members, 5) == 10 and next_change(members, 10) == 20


def test_ran_until_says_since_when_nobody_ran_a_check() -> None:
    assert ran_until(None, switch=50, ttl=10, margin=1) == float("-inf")  # nobody had it
    assert ran_until(member("a"), switch=50, ttl=10, margin=1) == 50  # a join: it ran until the switch
    assert ran_until(member("a", leaving=40), switch=50, ttl=10, margin=1) == 40  # an announced leave
    assert ran_until(member("a", expires=45), switch=50, ttl=10, margin=1) == 34  # a crash: its last heartbeat


# ---- membership on a real Redis -------------------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    try:
        await c.ping()
    except (redis.RedisError, OSError) as exc:
        await c.aclose()
        missing(f"Redis at 127.0.0.1:6379 not reachable: {exc}")
    prefix = f"test:cluster:{uuid.uuid4().hex}:"
    c.prefix = prefix  # type: ignore[attr-defined]
    yield c
    keys = [k async for k in c.scan_iter(match=f"{prefix}*")]
    if keys:
        await c.delete(*keys)
    await c.aclose()


def cluster_config(client: redis.asyncio.Redis, replica: str | None, **extra: object) -> ClusterConfig:
    return ClusterConfig(replica_id=replica, key_prefix=client.prefix, heartbeat=1, ttl=3, **extra)  # type: ignore[attr-defined, arg-type]


async def test_membership_first_member_at_once_others_announced_leaves_announced(client: redis.asyncio.Redis) -> None:
    a = Membership(client, cluster_config(client, "a"))
    b = Membership(client, cluster_config(client, "b"))
    first = await a.beat()
    assert first.outcome == "joined"
    (me,) = first.members
    assert me.active_at == me.joined_at  # alone: active at once
    second = await b.beat()
    assert second.outcome == "joined"
    rb = next(m for m in second.members if m.id == "b")
    assert rb.active_at - rb.joined_at == pytest.approx(SETTLE_HEARTBEATS * 1, abs=0.01)
    assert (await a.beat()).outcome == "renewed"
    left = await b.beat("leave")
    rb = next(m for m in left.members if m.id == "b")
    assert rb.leaving_at is not None and rb.leaving_at - rb.active_at == pytest.approx(0, abs=0.2)
    assert (await b.beat("depart")).outcome == "departed"
    assert [m.id for m in (await a.beat()).members] == ["a"]


async def test_membership_one_id_one_process(client: redis.asyncio.Redis) -> None:
    configured = Membership(client, cluster_config(client, "pod-1"))
    assert (await configured.beat()).outcome == "joined"
    clash = await Membership(client, cluster_config(client, "pod-1")).beat()
    assert clash.outcome == "conflict" and configured.incarnation in clash.holder
    # A default id (the hostname) shared by two daemons on one host: the second takes a suffix.
    first = Membership(client, cluster_config(client, None))
    second = Membership(client, cluster_config(client, None))
    assert (await first.beat()).outcome == "joined"
    assert (await second.beat()).outcome == "joined"
    assert first.id == default_replica_id() and second.id.startswith(default_replica_id() + "-")


async def test_membership_leases_run_out_and_backoff_announcements_fade(client: redis.asyncio.Redis) -> None:
    short = ClusterConfig(replica_id="a", key_prefix=client.prefix, heartbeat=0.1, ttl=1.0)  # type: ignore[attr-defined]
    a = Membership(client, short)
    b = Membership(client, short.model_copy(update={"replica_id": "b"}))
    await a.beat(backoff={"stripe": Backoff(factor=4, reason="quota api at 93%")})
    seen = await b.beat()
    assert seen.backoff == {"stripe": Backoff(factor=4, reason="quota api at 93%")}
    # a's lease waited out by Redis' clock, the one leases are kept by, not a guess of seconds (a 0.3 s lease
    # and a 0.4 s sleep: on a loaded machine the lease could run out before b's beat above).
    lease_end_ms = await client.zscore(f"{client.prefix}members", "a")  # type: ignore[attr-defined]
    assert lease_end_ms is not None
    seconds, micros = await client.time()
    await asyncio.sleep(max(0.0, lease_end_ms / 1000 - seconds - micros / 1e6) + 0.01)
    later = await b.beat()
    assert [m.id for m in later.members] == ["b"] and later.backoff == {}


# ---- results on the wire --------------------------------------------------------------------------------


def test_result_codec_round_trips_and_masks_secrets() -> None:
    result = CheckResult(
        integration="stripe", check="balance", kind="http", ok=False, error_class=ErrorClass.HTTP_5XX,
        detail="http_5xx: 503, the body quoted tok_SECRET", started_at=1.8e9, duration=0.25,
        total_duration=0.5, attempts=2, attempt_classes=(ErrorClass.TIMEOUT, ErrorClass.HTTP_5XX), status_code=503,
        phases={"dns": 0.001, "ttfb": 0.2}, tls_expiry=1.9e9,
        request=RequestSummary(method="GET", url="https://api.example/?token=[REDACTED]",
                               headers={"Accept": "application/json"}, body_excerpt=None),
        response_excerpt="echo tok_SECRET", rate_limit_headers=(("x-ratelimit-remaining", "10"),), body_bytes=12,
        rate_limit_body=(("extensions.cost.throttleStatus", '{"maximumAvailable":1000.0}'),),
        steps=(StepResult(name="create", ok=True, status_code=201, duration=0.1, attempts=1, phases={"ttfb": 0.05}),
               StepResult(name="read", ok=False, error_class=ErrorClass.HTTP_5XX, detail="http_5xx: tok_SECRET",
                          status_code=503, duration=0.2, attempts=2),
               StepResult(name="delete", cleanup=True, ok=True, skipped=True)),
    )
    text = encode_batch([(result, 1, "0123abcd0123abcd")], Redactor(["tok_SECRET"]))
    assert "tok_SECRET" not in text
    [(back, hops, target)], unreadable = decode_batch(text)
    assert hops == 1 and target == "0123abcd0123abcd" and unreadable == 0
    assert back.detail == "http_5xx: 503, the body quoted [REDACTED]"
    assert back.response_excerpt == "echo [REDACTED]"
    assert back.steps[1].detail == "http_5xx: [REDACTED]"
    plain = CheckResult(integration="a", check="b", kind="http", ok=True, error_class=None, detail="",
                        started_at=1.0, duration=0.1, total_duration=0.1)
    assert decode_batch(encode_batch([(plain, 0, None), (result, 0, "f")], Redactor())) == (
        [(plain, 0, None), (result, 0, "f")], 0)
    # A pair that is not a result is skipped and counted; the others keep their order.
    good = encode_batch([(plain, 0, None)], Redactor())[1:-1]
    assert decode_batch(f'[{good}, [0, {{"i": "a"}}], "x", [0, {{"i": "a", "ph": []}}], {good}]') == (
        [(plain, 0, None), (plain, 0, None)], 3)
    for not_a_batch in (b'{"i": "a"}', b"[", b""):
        with pytest.raises(ValueError):
            decode_batch(not_a_batch)


def test_a_member_seen_active_stays_active_when_the_next_beat_converts_its_activation_a_little_later() -> None:
    # Each heartbeat converts Redis' clock with its own offset estimate: an activation that has just
    # passed may come back a few ms in the future. The view must not flap (ownership there and back).
    from monitor.cluster.replica import Cluster
    from monitor.metrics import Metrics

    config = parse_config("monitor: {redis_url: 'redis://127.0.0.1:1/0', cluster: {replica_id: r0}}\n"
                          "integrations: {}\n", env={})
    cluster = Cluster(config, redis=redis.asyncio.Redis(host="127.0.0.1", port=1), metrics=Metrics())

    def member(name: str, active_at: float, joined_at: float = 0.0) -> Member:
        return Member(id=name, incarnation=f"{name}-1", joined_at=joined_at, active_at=active_at, expires_at=1000.0,
                      fleet=cluster.fleet)

    cluster._records = (member("r0", 0.0), member("r1", 100.0))
    assert cluster._view(100.002) == ("r0", "r1")
    cluster._records = (member("r0", 0.0), member("r1", 100.005))  # the next beat's estimate: 5 ms later
    assert cluster._view(100.003) == ("r0", "r1")
    # Registered again (an outage emptied Redis): a new activation, announced ahead, is a new record.
    cluster._records = (member("r0", 0.0), member("r1", 103.0, joined_at=100.5))
    assert cluster._view(101.0) == ("r0",)
