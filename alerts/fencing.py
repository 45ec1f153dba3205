"""Fencing tokens: one voice per incident when several replicas share one Redis (README, "Running several
replicas").

Ownership of an integration's alerting moves between replicas (a join, a leave, a crash, a pause past the
lease). A replica that lost it without knowing (paused, partitioned, a long GC) may still hold a
notification in a lane. So every change of owner is numbered: the replica that takes a shard of
integrations (an integration, or ``*`` for all when alerts are not grouped by integration) increments the
shard's counter in Redis (``<prefix>fence``, ``HINCRBY``) *before* it reloads the shard's alert state and
notification log, and every notification it plans carries that number (``alerts.outbox.Fence``). The
lane checks it atomically in Redis right before the send (``Outbox.may_send``, a Lua script), and the
notification log is written after the send only under the same check (``Outbox.delivered``): a replica
whose token is no longer the shard's current one is refused before anything reaches Slack, and cannot
overwrite the new owner's log either.

Redis unreachable: nobody can take anything over (the membership freezes), so sends go ahead unfenced
— fail open, a duplicate rather than silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from alerts.outbox import Fence
from alerts.self_health import is_monitor

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

ALL_INTEGRATIONS = "*"  # the shard of every integration when alert groups span integrations
TIMEOUT = 2.0


def shard_of(integration: str, group_by: Iterable[str]) -> str:
    return integration if "integration" in group_by else ALL_INTEGRATIONS


class Fences:
    """The fencing tokens this replica holds, by shard."""

    def __init__(self, redis: redis.asyncio.Redis, prefix: str) -> None:
        self._redis = redis
        self._key = f"{prefix}fence"
        self.held: dict[str, int] = {}

    async def acquire(self, shards: Iterable[str]) -> bool:
        """Take the next token of each shard (every earlier holder is refused from now on); False when Redis
        cannot be reached (tried again at the next evaluation)."""
        shards = sorted(set(shards))
        if not shards:
            return True
        try:
            async with asyncio.timeout(TIMEOUT):
                async with self._redis.pipeline(transaction=True) as pipe:
                    for shard in shards:
                        pipe.hincrby(self._key, shard, 1)
                    tokens = await pipe.execute()
        except Exception as exc:
            log.warning("fencing tokens for %s not taken (%s); retrying", ", ".join(shards), type(exc).__name__)
            return False
        self.held.update(zip(shards, (int(t) for t in tokens), strict=True))
        log.info("fencing tokens taken: %s", ", ".join(f"{s}={self.held[s]}" for s in shards))
        return True

    def drop(self, shards: Iterable[str]) -> None:
        for shard in shards:
            self.held.pop(shard, None)

    def fence(self, shard: str) -> Fence | None:
        token = self.held.get(shard)
        return None if token is None else Fence(shard, token)


def shard_of_group(group_key: str, group_by: Sequence[str]) -> str | None:
    """The shard a notification group belongs to; None for a group of one replica's own health."""
    if "integration" not in group_by:
        return ALL_INTEGRATIONS
    parts = group_key.split("|")
    index = list(group_by).index("integration")
    integration = parts[index] if index < len(parts) else ""
    return None if not integration or is_monitor(integration) else integration
