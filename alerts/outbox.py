"""The notifier outbox: undelivered notifications, one Redis list per notifier (``<prefix><notifier>``).

The dispatcher pushes an entry before it queues a notification and removes it once the notification was
delivered (or given up), so a restart resumes where the last process stopped (it may re-send the one
message in flight at the crash; duplicates beat loss). An entry is ``{"v": 1, "id": …, "n": …}`` in
JSON, ``n`` the notification in alerting's one encoding (``alerts/codec.py``); the random ``id`` keeps two
equal notifications two entries, since LREM removes by value.

Without Redis there is no outbox (the dispatcher's queue is in memory only). Redis errors are logged, not
raised: a notification is still delivered while Redis is down, it only would not survive a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import TYPE_CHECKING

from alerts.codec import notification_from_dict, notification_to_dict
from alerts.model import Notification

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

DEFAULT_OUTBOX_PREFIX = "im:outbox:"


def new_entry(notification: Notification) -> str:
    """The text of a new outbox entry for ``notification`` (what goes into the Redis list)."""
    return json.dumps({"v": 1, "id": uuid.uuid4().hex, "n": notification_to_dict(notification)}, ensure_ascii=False)


class Outbox:
    def __init__(self, redis: redis.asyncio.Redis | None, prefix: str = DEFAULT_OUTBOX_PREFIX, *,
                 timeout: float = 2.0) -> None:
        """``timeout``: a Redis call slower than this is given up (the entry stays in memory only)."""
        self.redis = redis
        self._prefix = prefix
        self._timeout = timeout

    @property
    def durable(self) -> bool:
        return self.redis is not None

    def _key(self, notifier: str) -> str:
        return f"{self._prefix}{notifier}"

    async def push(self, notifier: str, raw: str) -> None:
        if self.redis is None:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self.redis.rpush(self._key(notifier), raw)
        except Exception as exc:
            log.warning("outbox: Redis write failed (%s); notification kept in memory only", type(exc).__name__)

    async def remove(self, notifier: str, raw: str) -> None:
        if self.redis is None:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self.redis.lrem(self._key(notifier), 1, raw)
        except Exception as exc:
            log.warning("outbox: Redis remove failed (%s); it may be re-sent after a restart", type(exc).__name__)

    async def load(self, notifier: str) -> list[tuple[str, Notification]]:
        """The entries a previous process left for ``notifier``, oldest first, as (raw text, notification).
        An entry that does not decode is logged and removed."""
        if self.redis is None:
            return []
        try:
            async with asyncio.timeout(self._timeout):
                raws = await self.redis.lrange(self._key(notifier), 0, -1)
        except Exception as exc:
            log.warning("outbox: Redis read failed (%s); starting with an empty queue", type(exc).__name__)
            return []
        entries = []
        for raw in raws:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                entries.append((text, notification_from_dict(json.loads(text)["n"])))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.error("outbox: dropping an unreadable entry for %s (%s)", notifier, type(exc).__name__)
                await self.remove(notifier, text)
        return entries
