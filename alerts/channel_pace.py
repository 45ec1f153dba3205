"""A channel's pace shared by every replica posting to it (Slack: about one message a second per channel).

Slack's limit is the channel's, not the sender's: N replicas each pacing themselves would post N times the
rate and draw 429s. So the next moment a channel may be posted to lives in Redis, one key per channel:

    <prefix>pace:<channel>  string  the earliest send allowed, ms on the Redis server's clock

A lane claims its send with one script: granted (and the next slot moved a pace on) when the moment has
come, otherwise told how long to wait. A 429's Retry-After moves the moment on for every replica (``park``).
The script reads Redis' own clock (``TIME``), so replicas' clocks never need to agree, and it runs
atomically, so two replicas claiming at once never both get the slot.

Without Redis, or while it does not answer, the lane's own pace is all there is (each replica alone): a
message is never held back because Redis is down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

# KEYS: the channel's pace key. ARGV: 'claim' | 'park', milliseconds (the pace; the Retry-After).
# claim → 0: granted (the next slot is a pace on); n > 0: wait n ms. park → 0 (the slot is Retry-After on, or later).
_PACE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local allowed = tonumber(redis.call('GET', KEYS[1]) or '0')
local ms = tonumber(ARGV[2])
if ARGV[1] == 'claim' and allowed > now then return allowed - now end
if ARGV[1] == 'park' and allowed >= now + ms then return 0 end
redis.call('SET', KEYS[1], now + ms, 'PX', ms + 1000)
return 0
"""


class ChannelPace:
    """The shared pace of the channels the lanes post to (``Notifier.channel``); see the module's doc."""

    def __init__(self, redis: redis.asyncio.Redis | None, prefix: str, *, timeout: float) -> None:
        self._prefix = f"{prefix}pace:"
        self._timeout = timeout
        self._script = redis.register_script(_PACE) if redis is not None else None
        self._failing = False  # logged once per outage, not once a message

    async def claim(self, channel: str | None, pace: float) -> float:
        """Seconds to wait before posting to ``channel`` (0: go now, the slot is this replica's)."""
        waited = await self._call(channel, "claim", pace)
        return waited / 1000

    async def park(self, channel: str | None, seconds: float) -> None:
        """Nobody posts to ``channel`` for ``seconds`` (Slack said Retry-After)."""
        await self._call(channel, "park", seconds)

    async def _call(self, channel: str | None, action: str, seconds: float) -> int:
        if self._script is None or channel is None:
            return 0
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._script(keys=[self._prefix + channel], args=[action, max(0, round(seconds * 1000))])
        except Exception as exc:
            if not self._failing:
                log.warning("channel pace: Redis did not answer (%s); pacing this replica alone until it does",
                            type(exc).__name__)
            self._failing = True
            return 0
        if self._failing:
            log.info("channel pace: Redis answers again; pacing shared with the other replicas")
        self._failing = False
        return int(answer)
