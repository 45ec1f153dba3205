"""The notifier outbox, and the notification log's writes once a notifier confirmed delivery.

    <outbox prefix><notifier>  list  undelivered notifications, one entry each (a day after the last push)
    <prefix>nflog              hash  "<notifier>|<group key>" → the group's log for that notifier
    <prefix>fence              hash  integration (``*``: all) → fencing token of its current owner

The dispatcher pushes an entry before it queues a notification. Once the notifier confirmed delivery, one
script removes the entry and writes the notification log the engine planned with it (``Record``), so a
restart neither loses the message (the entry is still there) nor sends it again (the log says it was
sent); a notification dropped undelivered is removed without touching the log, so the engine plans it
again (like Alertmanager's nflog: logged as sent only once delivered). A restart may re-send the one
message in flight at the crash; duplicates beat loss. An entry is ``{"v": 1, "id": …, "n": …, "r": …}``
in JSON, ``n`` the notification in alerting's one encoding (``alerts/codec.py``), ``r`` its record; the
random ``id`` keeps two equal notifications two entries, since LREM removes by value.

When several replicas share the Redis, a record carries the fencing token (``Fence``, alerts/fencing.py)
under which its owner planned it: the send is refused when the token is no longer the integration's
current one (``may_send``, checked right before the notifier is called), and so is the log write after it.

Without Redis there is no outbox (the dispatcher's queue is in memory only). Redis errors are logged, not
raised: a notification is still delivered while Redis is down, it only would not survive a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alerts.codec import group_from_json, group_to_json, notification_from_dict, notification_to_dict
from alerts.config import DEFAULT_KEY_PREFIX
from alerts.grouping import GroupLog
from alerts.model import Notification

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

DEFAULT_OUTBOX_PREFIX = "im:outbox:"
# A list nobody pushed to for this long belongs to a process that is gone for good (a replica's pod name
# changes with every restart): what it held is planned again from the notification log, so it may go.
OUTBOX_TTL = 86400

# KEYS: outbox list, nflog hash, fence hash. ARGV: entry, nflog field ('' = none), log JSON ('' = forget the
# group), fence shard ('' = unfenced), fence token. 1: logged; 0: refused (the fence moved on).
_DELIVERED = """
redis.call('LREM', KEYS[1], 1, ARGV[1])
if ARGV[2] == '' then return 1 end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[3], ARGV[4]) ~= ARGV[5] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[2], ARGV[2]) else redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) end
return 1
"""


# KEYS: fence hash. ARGV: shard, token. 1 while the token is the shard's current one (alerts/fencing.py).
_MAY_SEND = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 1 end
return 0
"""


@dataclass(frozen=True, slots=True)
class Fence:
    """The fencing token an owner holds for a shard of integrations (an integration, or ``*``)."""

    shard: str
    token: int


# The fence of the notification a lane is delivering, while its notifier's ``send`` runs: what a notifier
# writes to Redis about it (the Slack thread record) is written under the same token, so a replica that
# lost the integration while the send was under way cannot overwrite the new owner's record.
delivering_under: ContextVar[Fence | None] = ContextVar("delivering_under", default=None)


@dataclass(frozen=True, slots=True)
class Record:
    """What the notification log says once this notification is delivered."""

    field: str  # alerts.grouping.nflog_field: "<notifier>|<group key>"
    log: GroupLog | None  # None: nothing left to remember for the group
    fence: Fence | None = None


def new_entry(notification: Notification, record: Record | None = None) -> str:
    """The text of a new outbox entry for ``notification`` (what goes into the Redis list)."""
    doc: dict[str, Any] = {"v": 1, "id": uuid.uuid4().hex, "n": notification_to_dict(notification)}
    if record is not None:
        doc["r"] = {
            "field": record.field,
            "log": None if record.log is None else group_to_json(record.log),
            "fence": None if record.fence is None else [record.fence.shard, record.fence.token],
        }
    return json.dumps(doc, ensure_ascii=False)


def _record(doc: Any) -> Record | None:
    if doc is None:
        return None
    fence = doc.get("fence")
    return Record(
        field=str(doc["field"]),
        log=None if doc.get("log") is None else group_from_json(doc["log"]),
        fence=None if fence is None else Fence(str(fence[0]), int(fence[1])),
    )


class Outbox:
    def __init__(self, redis: redis.asyncio.Redis | None, prefix: str = DEFAULT_OUTBOX_PREFIX, *,
                 log_prefix: str = DEFAULT_KEY_PREFIX, timeout: float = 2.0) -> None:
        """``prefix``: the outbox lists'; ``log_prefix``: alerting's (the nflog and fence hashes).
        ``timeout``: a Redis call slower than this is given up (the entry stays in memory only)."""
        self.redis = redis
        self._prefix = prefix
        self._nflog, self._fence = f"{log_prefix}nflog", f"{log_prefix}fence"
        self._timeout = timeout
        self._delivered = redis.register_script(_DELIVERED) if redis is not None else None
        self._may_send = redis.register_script(_MAY_SEND) if redis is not None else None

    @property
    def durable(self) -> bool:
        return self.redis is not None

    def _key(self, notifier: str) -> str:
        return f"{self._prefix}{notifier}"

    async def push(self, notifier: str, raw: str) -> None:
        if self.redis is None:
            return
        try:
            async with asyncio.timeout(self._timeout), self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self._key(notifier), raw)
                pipe.expire(self._key(notifier), OUTBOX_TTL)
                await pipe.execute()
        except Exception as exc:
            log.warning("outbox: Redis write failed (%s); notification kept in memory only", type(exc).__name__)

    async def remove(self, notifier: str, raw: str) -> None:
        """A notification given up (or refused): out of the outbox, the notification log untouched."""
        await self.delivered(notifier, raw, None)

    async def delivered(self, notifier: str, raw: str, record: Record | None) -> bool:
        """Out of the outbox and, with ``record``, its log written (unless its fence moved on: False).
        True too when Redis cannot be reached: the engine keeps the log in memory meanwhile."""
        if self._delivered is None:
            return True
        args: list[Any] = [raw, "", "", "", 0]
        if record is not None:
            args[1:3] = [record.field, "" if record.log is None else group_to_json(record.log)]
            if record.fence is not None:
                args[3:5] = [record.fence.shard, record.fence.token]
        try:
            async with asyncio.timeout(self._timeout):
                return bool(await self._delivered(keys=[self._key(notifier), self._nflog, self._fence], args=args))
        except Exception as exc:
            log.warning("outbox: Redis remove failed (%s); it may be re-sent after a restart", type(exc).__name__)
            return True

    async def may_send(self, record: Record | None) -> bool:
        """False when the record's fencing token is no longer its shard's current one: another replica owns
        the integration now. True without a fence, and when Redis cannot be reached (fail open)."""
        if self._may_send is None or record is None or record.fence is None:
            return True
        try:
            async with asyncio.timeout(self._timeout):
                return bool(await self._may_send(keys=[self._fence], args=[record.fence.shard, record.fence.token]))
        except Exception as exc:
            log.warning("outbox: fencing token not checked (%s); sending anyway", type(exc).__name__)
            return True

    async def load(self, notifier: str) -> list[tuple[str, Notification, Record | None]]:
        """The entries a previous process left for ``notifier``, oldest first, as (raw text, notification,
        record). An entry that does not decode is logged and removed."""
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
                doc = json.loads(text)
                entries.append((text, notification_from_dict(doc["n"]), _record(doc.get("r"))))
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
                log.error("outbox: dropping an unreadable entry for %s (%s)", notifier, type(exc).__name__)
                await self.remove(notifier, text)
        return entries
