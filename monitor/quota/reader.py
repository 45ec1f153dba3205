"""Read one Redis quota: SCAN MATCH its pattern, read every key in pipelined batches, summarise.

Round trips: the first SCAN page travels with ``TIME`` (Redis' clock is "now": the limiters write with
it, so there is no skew to correct). SCAN walks the whole keyspace, so there is one round trip per
``scan_count`` keys of the database (20 for 100,000 keys at the default 5,000), then one pipeline per
``BATCH_KEYS`` matched keys, plus one follow-up pipeline for the keys whose format needs a second look
(e.g. a ``limits`` moving window), plus one PTTL for the busiest key where the reset is a TTL. Reading
10,000 counters in a database of 100,000 keys: 23 round trips (bench/quota_read.py), never one per key.

A pattern that matches many keys (one per customer, say) is summarised: the busiest key (highest usage
ratio, or usage when there is no limit) stands for the quota, plus how many keys there are and how many
are above ``near_limit``. Keys are never labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from integration_kit.limiter_formats import Command, KeyPlan, KeyReading, Skip, reader_for, text, wire
from integration_kit.results import QuotaObservation
from monitor.settings.quota import RedisQuotaConfig

if TYPE_CHECKING:
    import redis.asyncio

BATCH_KEYS = 5000


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaReading:
    observation: QuotaObservation  # the busiest key's reading; used 0 when no key matched
    busiest_key: str | None
    keys: int  # keys read (a sliding window's current + previous pair counts once)
    keys_near_limit: int  # keys with used / limit above the quota's near_limit
    fixed_window: bool  # the busiest key's window empties at reset (used by the exhaustion projection)
    skipped: tuple[tuple[str, str], ...]  # (key, reason) of keys of an unexpected type or value
    round_trips: int


async def read_redis_quota(client: redis.asyncio.Redis, cfg: RedisQuotaConfig) -> QuotaReading:
    """One read of a quota. Raises redis errors (connection, timeout, ACL) for the caller to back off."""
    fmt = reader_for(cfg)
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("TIME")
    pipe.execute_command("SCAN", 0, "MATCH", cfg.match, "COUNT", cfg.scan_count)
    clock, (cursor, page) = await pipe.execute()
    round_trips = 1
    now = _redis_time(clock)

    primaries: dict[str, None] = {}  # insertion-ordered set
    unknown: list[tuple[str, str]] = []
    while True:
        for raw in page:
            key = text(raw)
            main = fmt.primary(key)
            if main is None:
                unknown.append((key, f"key name not in {cfg.format} format"))
            else:
                primaries[main] = None
        if int(cursor) == 0:
            break
        cursor, page = await client.scan(cursor=int(cursor), match=cfg.match, count=cfg.scan_count)
        round_trips += 1

    readings: list[KeyReading] = []
    skipped = list(unknown)
    keys = list(primaries)
    for start in range(0, len(keys), BATCH_KEYS):
        batch = fmt.plan(keys[start : start + BATCH_KEYS], now)
        outcomes = batch.decode(await _run(client, batch.commands))
        round_trips += 1
        while outcomes:  # follow-ups (a second look at some keys) travel together in one more pipeline
            follow_ups: list[tuple[str, KeyPlan]] = []
            for key, outcome in outcomes:
                if isinstance(outcome, KeyReading):
                    readings.append(outcome)
                elif isinstance(outcome, KeyPlan):
                    follow_ups.append((key, outcome))
                elif isinstance(outcome, Skip):
                    skipped.append((key, outcome.reason))
            outcomes = []
            if follow_ups:
                replies = await _run(client, [cmd for _, plan in follow_ups for cmd in plan.commands])
                round_trips += 1
                offset = 0
                for key, plan in follow_ups:
                    outcomes.append((key, plan.decode(replies[offset : offset + len(plan.commands)])))
                    offset += len(plan.commands)

    busiest = max(readings, key=lambda r: (r.ratio if r.ratio is not None else -1.0, r.used), default=None)
    if busiest is not None and busiest.reset_from_ttl is not None:
        pttl = await client.execute_command("PTTL", wire(busiest.key))
        round_trips += 1
        busiest = replace(busiest, reset_seconds=busiest.reset_from_ttl(pttl), reset_from_ttl=None)
    return _summarise(cfg, fmt.limit, readings, busiest, skipped, now, round_trips)


async def _run(client: redis.asyncio.Redis, commands: Sequence[Command]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    # Errors come back in place (WRONGTYPE is how a limits key tells its strategy); the decoders
    # raise the ones that are not about the key.
    return list(await pipe.execute(raise_on_error=False))


def _redis_time(reply: Any) -> float:
    seconds, micros = reply
    return int(seconds) + int(micros) / 1_000_000


def _summarise(
    cfg: RedisQuotaConfig,
    idle_limit: float | None,
    readings: list[KeyReading],
    busiest: KeyReading | None,
    skipped: list[tuple[str, str]],
    now: float,
    round_trips: int,
) -> QuotaReading:
    near = sum(1 for r in readings if r.ratio is not None and r.ratio > cfg.near_limit)
    if busiest is None:
        observation = QuotaObservation(
            policy=cfg.name, used=0.0, limit=idle_limit, reset_seconds=None,
            window_seconds=cfg.window, observed_at=now,
        )
    else:
        observation = QuotaObservation(
            policy=cfg.name, used=busiest.used, limit=busiest.limit, reset_seconds=busiest.reset_seconds,
            window_seconds=busiest.window_seconds, observed_at=now,
        )
    return QuotaReading(
        observation=observation,
        busiest_key=busiest.key if busiest else None,
        keys=len(readings),
        keys_near_limit=near,
        fixed_window=busiest.fixed_window if busiest else False,
        skipped=tuple(skipped),
        round_trips=round_trips,
    )

