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

Redis back *empty* (no persistence): the counters are gone. A token is never taken by counting from zero
again — a shard's first token is seeded from Redis' clock in microseconds (``_TAKE``), so a token handed
out before the loss (at most the earlier seed plus the number of takeovers since) never equals one handed
out after it — and every evaluation checks the tokens held (``check``, one script for all shards): a
shard whose token is gone from Redis is taken again by its owner (the membership says it still owns it),
a shard whose token moved on (another replica took it) is dropped and its sends stay refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from alerts.outbox import Fence
from alerts.self_health import is_monitor

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

ALL_INTEGRATIONS = "*"  # the shard of every integration when alert groups span integrations
TIMEOUT = 2.0

# KEYS: fence hash. ARGV: pairs (shard, token held; '' = none). For each shard, the token now held: the
# same one while it is current; a new one when none is held or the stored one is gone (a first token is
# Redis' clock in µs, never a restart from zero); 0 when another replica's token is current.
_TAKE = """
local t = redis.call('TIME')
local seed = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #ARGV, 2 do
  local shard, held = ARGV[i], ARGV[i + 1]
  local current = redis.call('HGET', KEYS[1], shard)
  if current and held ~= '' and current == held then
    out[#out + 1] = tonumber(held)
  elseif current and held ~= '' then
    out[#out + 1] = 0
  elseif current then
    out[#out + 1] = redis.call('HINCRBY', KEYS[1], shard, 1)
  else
    redis.call('HSET', KEYS[1], shard, string.format('%d', seed))
    out[#out + 1] = seed
  end
end
return out
"""


LOGGED_SHARDS = 10  # shards an info line names: at 500 integrations the whole list made ~15 kB lines


def _sample(names: Sequence[str]) -> str:
    """The first LOGGED_SHARDS names, then how many more: a line that stays short at any scale."""
    shown = ", ".join(names[:LOGGED_SHARDS])
    return f"{shown} … and {len(names) - LOGGED_SHARDS} more" if len(names) > LOGGED_SHARDS else shown


def shard_of(integration: str, group_by: Iterable[str]) -> str:
    return integration if "integration" in group_by else ALL_INTEGRATIONS


class Fences:
    """The fencing tokens this replica holds, by shard."""

    def __init__(self, redis: redis.asyncio.Redis, prefix: str) -> None:
        self._redis = redis
        self._key = f"{prefix}fence"
        self._take = redis.register_script(_TAKE)
        self.held: dict[str, int] = {}

    async def acquire(self, shards: Iterable[str]) -> bool:
        """Take the next token of each shard (every earlier holder is refused from now on) and check the
        ones held (taken again when Redis lost them, dropped when another replica took them); False when
        Redis cannot be reached (tried again at the next evaluation)."""
        wanted = sorted(set(shards) | set(self.held))
        if not wanted:
            return True
        args: list[str | int] = []
        for shard in wanted:
            args += [shard, self.held.get(shard, "")]
        try:
            async with asyncio.timeout(TIMEOUT):
                tokens = await self._take(keys=[self._key], args=args)
        except Exception as exc:
            log.warning("fencing tokens for %d shards (%s) not taken (%s); retrying", len(wanted), _sample(wanted),
                        type(exc).__name__)
            return False
        taken: dict[str, int] = {}
        for shard, token in zip(wanted, (int(t) for t in tokens), strict=True):
            if not token:
                log.warning("fencing token of %s superseded: another replica took its alerting over", shard)
                self.held.pop(shard, None)
            elif self.held.get(shard) != token:
                taken[shard] = self.held[shard] = token
        if taken:
            named = [f"{s}={t}" for s, t in sorted(taken.items())]
            log.info("fencing tokens taken for %d shards: %s", len(named), _sample(named))
            if len(named) > LOGGED_SHARDS:
                log.debug("fencing tokens taken: %s", ", ".join(named))
        return True

    def tokens(self) -> Mapping[str, int]:
        return dict(self.held)

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
