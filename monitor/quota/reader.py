"""Read one Redis quota: SCAN MATCH its pattern, read every key in pipelined batches, summarise.

Round trips: the first SCAN page travels with ``TIME`` (Redis' clock is "now": the limiters write with
it, so there is no skew to correct), each further SCAN page is one round trip, and the keys are read in
pipelines of ``BATCH_KEYS`` keys (plus one follow-up pipeline for the keys whose format needs a second
look, e.g. a ``limits`` moving window with expired entries). 10,000 keys cost about a dozen round trips
in all (see bench/quota_read.py), never one per key.

A pattern that matches many keys (one per customer, say) is summarised: the busiest key (highest usage
ratio, or usage when there is no limit) stands for the quota, plus how many keys there are and how many
are above ``near_limit``. Keys are never labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitor.quota.config import RedisQuotaConfig
from monitor.quota.formats import Command, KeyPlan, KeyReading, Skip, reader_for, text
from monitor.quota.model import QuotaObservation

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
        pending: list[tuple[str, KeyPlan]] = [(k, fmt.plan(k, now)) for k in keys[start : start + BATCH_KEYS]]
        while pending:  # a plan may ask for one more look; those go together in the next pipeline
            replies = await _run(client, [cmd for _, plan in pending for cmd in plan.commands])
            round_trips += 1
            follow_ups: list[tuple[str, KeyPlan]] = []
            offset = 0
            for key, plan in pending:
                outcome = plan.decode(replies[offset : offset + len(plan.commands)])
                offset += len(plan.commands)
                if isinstance(outcome, KeyReading):
                    readings.append(outcome)
                elif isinstance(outcome, KeyPlan):
                    follow_ups.append((key, outcome))
                elif isinstance(outcome, Skip):
                    skipped.append((key, outcome.reason))
            pending = follow_ups

    return _summarise(cfg, fmt.limit, readings, skipped, now, round_trips)


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
    skipped: list[tuple[str, str]],
    now: float,
    round_trips: int,
) -> QuotaReading:
    near = sum(1 for r in readings if r.ratio is not None and r.ratio > cfg.near_limit)
    busiest = max(readings, key=lambda r: (r.ratio if r.ratio is not None else -1.0, r.used), default=None)
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

