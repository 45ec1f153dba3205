"""The monitor's read-only view of the webhook ledger keys (see ``integration_kit.webhooks`` for them).

One pipelined round trip per read, whatever the number of integrations: ``TIME`` plus ``HGETALL`` of
each integration's stats and types hashes. Never writes. A field that isn't a number (someone else
wrote the key) is logged once and read as missing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from integration_kit.webhook_observations import WebhookSnapshot
from integration_kit.webhooks import stats_key, types_key

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

MAX_TYPES = 200  # per integration kept from the types hash (the most recent); bounds memory and status


class WebhookReader:
    def __init__(self, redis: redis.asyncio.Redis) -> None:
        self._redis = redis
        self._complained: set[tuple[str, str]] = set()

    async def read(self, integrations: Mapping[str, str]) -> dict[str, WebhookSnapshot]:
        """Read every integration's totals in one round trip. ``integrations``: name → key prefix.

        Raises ``redis.exceptions.RedisError`` (and OSError) when Redis can't be read: the caller decides
        how to degrade.
        """
        names = list(integrations)
        pipe = self._redis.pipeline(transaction=False)
        pipe.time()
        for name in names:
            pipe.hgetall(stats_key(name, integrations[name]))
            pipe.hgetall(types_key(name, integrations[name]))
        replies = await pipe.execute()
        seconds, micros = replies[0]
        now = float(seconds) + float(micros) / 1e6
        out: dict[str, WebhookSnapshot] = {}
        for i, name in enumerate(names):
            stats = decode_hash(replies[1 + 2 * i])
            types = decode_hash(replies[2 + 2 * i])
            out[name] = self._snapshot(name, stats, types, now)
        return out

    def _snapshot(self, name: str, stats: dict[str, str], types: dict[str, str], now: float) -> WebhookSnapshot:
        seen: dict[str, float] = {}
        for event_type, raw in types.items():
            value = self._number(name, f"types[{event_type[:64]}]", raw)
            if value is not None:
                seen[event_type] = value
        if len(seen) > MAX_TYPES:
            seen = dict(sorted(seen.items(), key=lambda kv: kv[1], reverse=True)[:MAX_TYPES])
        return WebhookSnapshot(
            integration=name,
            received=self._count(name, "received", stats.get("received")),
            duplicates=self._count(name, "duplicates", stats.get("duplicates")),
            released=self._count(name, "released", stats.get("released")),
            last_event_ts=self._number(name, "last_event_ts", stats.get("last_event_ts")),
            event_types=seen,
            read_at=now,
        )

    def _count(self, name: str, what: str, raw: str | None) -> int:
        value = self._number(name, what, raw)
        return int(value) if value is not None and value >= 0 else 0

    def _number(self, name: str, what: str, raw: str | None) -> float | None:
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if math.isfinite(value):
            return value
        if (name, what) not in self._complained:
            self._complained.add((name, what))
            log.warning("webhook keys of %s: %s is not a number (%r); ignored", name, what, raw[:40])
        return None


def decode_hash(reply: Any) -> dict[str, str]:
    """HGETALL reply → str dict, whether the client decodes responses or not (the traffic reader uses it too)."""
    out: dict[str, str] = {}
    for key, value in (reply or {}).items():
        k = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        v = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        out[k] = v
    return out
