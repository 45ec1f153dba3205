"""The monitor's read-only view of the real-traffic buckets (key format: ``integration_kit.traffic``).

One pipelined round trip per read for all integrations: ``TIME``, then per integration ``GET`` of its
``last`` key and ``HGETALL`` of every bucket from the one it asks for onwards (by the monitor's clock,
one bucket beyond now for writers whose clock runs ahead). Never writes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from integration_kit.traffic import BUCKET_SECONDS, bucket_key, bucket_of, last_key
from monitor.webhooks.reader import decode_hash

if TYPE_CHECKING:
    import redis.asyncio


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficRead:
    buckets: dict[int, dict[str, str]]  # bucket start → its fields (absent buckets left out)
    last_write: float | None  # epoch seconds of a writer's latest flush


async def read_traffic(
    client: redis.asyncio.Redis, wanted: Mapping[str, tuple[str, int]], *, clock: Any = time.time
) -> tuple[float, dict[str, TrafficRead]]:
    """``wanted``: integration → (key prefix, first bucket to read). Returns Redis' clock and what each
    integration's keys hold. Raises redis errors (and OSError) for the caller to back off."""
    newest = bucket_of(clock()) + BUCKET_SECONDS
    pipe = client.pipeline(transaction=False)
    pipe.time()
    plan: list[tuple[str, list[int]]] = []
    for name, (prefix, first) in wanted.items():
        starts = list(range(first, newest + 1, BUCKET_SECONDS))
        plan.append((name, starts))
        pipe.get(last_key(name, prefix))
        for start in starts:
            pipe.hgetall(bucket_key(name, start, prefix))
    replies = await pipe.execute()
    seconds, micros = replies[0]
    at = 1
    out: dict[str, TrafficRead] = {}
    for name, starts in plan:
        last = _float(replies[at])
        buckets = {start: decode_hash(replies[at + 1 + i]) for i, start in enumerate(starts) if replies[at + 1 + i]}
        out[name] = TrafficRead(buckets=buckets, last_write=last)
        at += 1 + len(starts)
    return float(seconds) + float(micros) / 1e6, out


def _float(reply: Any) -> float | None:
    if reply is None:
        return None
    try:
        return float(reply)
    except (TypeError, ValueError):
        return None

