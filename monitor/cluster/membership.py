"""Membership in Redis: one Lua script per heartbeat renews this replica's lease and reads everyone's.

    <prefix>members      sorted set  replica id → lease end (ms, Redis clock)
    <prefix>member-info  hash        replica id → JSON record (incarnation, joined_at, active_at, leaving_at…)
    <prefix>backoff      hash        integration → "<ms> <JSON>": probe back-off set by the integration's owner

The script is atomic and uses Redis' own clock (``TIME``), so replicas with skewed clocks agree on every
lease. It drops expired members, renews or creates this replica's record, and returns all records plus
the back-off table in the same round trip: one command per replica per heartbeat.

A join is announced: the new member's ``active_at`` is one and a half heartbeats ahead (every replica
reads it at its next heartbeat and switches at that instant); the very first member of a cluster is
active at once. A graceful leave (``leave``) sets ``leaving_at`` the same way; ``depart`` removes the
record once the replica has stopped. A live record with the same id but another incarnation is a second
process claiming this replica's name: ``conflict``, and nothing is written. A replica whose id is the
default (the hostname) then takes ``<hostname>-<random>`` instead: two daemons on one host, or a
restart that comes before the crashed predecessor's lease ran out; a configured id waits.

Each record carries the replica's *fleet*: a fingerprint of what decides placement (the checks, the
jitter, the alert grouping). Only members with the same fingerprint share work: during a rolling config
change, old and new replicas each cover all of their own checks (some run twice for a while) rather than
leave some unprobed; the alert fencing (one owner at a time per integration) keeps them to one voice.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from monitor.cluster.view import Member
from monitor.settings.cluster import default_replica_id

if TYPE_CHECKING:
    import redis.asyncio

    from monitor.settings.cluster import ClusterConfig

Mode = Literal["beat", "leave", "depart"]
Outcome = Literal["renewed", "joined", "conflict", "departed", "absent"]

SETTLE_HEARTBEATS = 1.5  # a join or leave takes effect this many heartbeats after it is announced

_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local members, info, backoff = KEYS[1], KEYS[2], KEYS[3]
local id, incarnation = ARGV[1], ARGV[2]
local ttl, settle, mode = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

local expired = redis.call('ZRANGEBYSCORE', members, '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', members, '-inf', now)
  redis.call('HDEL', info, unpack(expired))
end

local outcome = 'renewed'
local record
local raw = redis.call('HGET', info, id)
local given = cjson.decode(ARGV[6])
if raw then
  record = cjson.decode(raw)
  if record.incarnation ~= incarnation then
    return {'conflict', now, raw}
  end
  record.address = given.address
  record.version = given.version
  record.fleet = given.fleet
else
  if mode ~= 'beat' then
    return {'absent', now}
  end
  record = given
  record.incarnation = incarnation
  record.joined_at = now
  record.active_at = now
  if redis.call('ZCARD', members) > 0 then
    record.active_at = now + settle
  end
  outcome = 'joined'
end

if mode == 'depart' then
  redis.call('ZREM', members, id)
  redis.call('HDEL', info, id)
  return {'departed', now}
end
if mode == 'leave' and not record.leaving_at then
  if redis.call('ZCARD', members) > 1 then
    record.leaving_at = now + settle
  else
    record.leaving_at = now
  end
end
redis.call('ZADD', members, now + ttl, id)
redis.call('HSET', info, id, cjson.encode(record))

for i = 7, #ARGV, 2 do
  redis.call('HSET', backoff, ARGV[i], now .. ' ' .. ARGV[i + 1])
end
local table = redis.call('HGETALL', backoff)
for i = 1, #table, 2 do
  local at = tonumber(string.match(table[i + 1], '^(%d+) '))
  if at == nil or at < now - ttl then
    redis.call('HDEL', backoff, table[i])
  end
end
return {outcome, now, redis.call('ZRANGE', members, 0, -1, 'WITHSCORES'), redis.call('HGETALL', info),
        redis.call('HGETALL', backoff)}
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """A probe back-off the owner of an integration announced (factor 1 = none)."""

    factor: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Beat:
    """What one heartbeat round trip saw. Times are converted to the local clock."""

    outcome: Outcome
    offset: float  # Redis clock minus local clock, seconds (midpoint of the round trip)
    members: tuple[Member, ...] = ()
    backoff: Mapping[str, Backoff] = field(default_factory=dict)
    holder: str = ""  # on conflict: the other process's record (JSON)


class Membership:
    """This replica's lease in Redis. ``beat()`` is the only I/O; it raises what redis-py raises."""

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        config: ClusterConfig,
        *,
        address: Callable[[], str] = str,
        fleet: Callable[[], str] = str,
        version: str = "",
    ) -> None:
        self.redis = redis
        self.config = config
        self.incarnation = secrets.token_hex(8)
        self.id = config.replica_id or default_replica_id()
        self._fleet = fleet
        self.keys = [f"{config.key_prefix}{name}" for name in ("members", "member-info", "backoff")]
        self._address = address  # asked at each join: the HTTP server may not listen yet when the first beat goes
        self._version = version
        self._script = redis.register_script(_BEAT)

    @property
    def settle(self) -> float:
        return SETTLE_HEARTBEATS * self.config.heartbeat

    async def beat(self, mode: Mode = "beat", backoff: Mapping[str, Backoff] | None = None) -> Beat:
        """Renew (or create, leave, remove) this replica's lease and read everyone's; ``backoff`` is what
        this replica announces for the integrations it owns (renewed with every beat, gone after a TTL)."""
        args: list[Any] = [
            self.id, self.incarnation, round(self.config.ttl * 1000), round(self.settle * 1000), mode,
            json.dumps({"address": self._address(), "version": self._version, "fleet": self._fleet()}),
        ]
        for integration, entry in (backoff or {}).items():
            args += [integration, json.dumps({"factor": entry.factor, "reason": entry.reason})]
        sent = time.time()
        reply = await self._script(keys=self.keys, args=args)
        received = time.time()
        outcome = _text(reply[0])
        offset = int(reply[1]) / 1000 - (sent + received) / 2
        defaulted = self.config.replica_id is None and self.id == default_replica_id()
        if outcome == "conflict" and defaulted and mode == "beat":
            # The hostname is taken by another live daemon on this host (or by this replica's previous run,
            # which did not leave cleanly): a name of its own, at once, rather than waiting for that lease.
            self.id = f"{self.id}-{self.incarnation[:6]}"
            return await self.beat(mode, backoff)
        if outcome == "conflict":
            return Beat(outcome="conflict", offset=offset, holder=_text(reply[2]))
        if outcome in ("departed", "absent"):
            return Beat(outcome=outcome, offset=offset)  # type: ignore[arg-type]
        return Beat(
            outcome=outcome,  # type: ignore[arg-type]
            offset=offset,
            members=_members(reply[2], reply[3], offset),
            backoff=_backoff(reply[4], self.config.ttl, int(reply[1]) / 1000),
        )


def _members(scores: list[Any], records: list[Any], offset: float) -> tuple[Member, ...]:
    leases = {_text(scores[i]): float(scores[i + 1]) / 1000 for i in range(0, len(scores), 2)}
    out = []
    for i in range(0, len(records), 2):
        member_id = _text(records[i])
        if member_id not in leases:
            continue
        doc = json.loads(records[i + 1])

        def local(ms: Any) -> float:
            return float(ms) / 1000 - offset

        out.append(Member(
            id=member_id, incarnation=str(doc.get("incarnation", "")), joined_at=local(doc["joined_at"]),
            active_at=local(doc["active_at"]), expires_at=leases[member_id] - offset,
            leaving_at=local(doc["leaving_at"]) if doc.get("leaving_at") is not None else None,
            address=str(doc.get("address", "")), version=str(doc.get("version", "")), fleet=str(doc.get("fleet", "")),
        ))
    return tuple(sorted(out, key=lambda m: m.id))


def _backoff(table: list[Any], ttl: float, now: float) -> dict[str, Backoff]:
    out = {}
    for i in range(0, len(table), 2):
        stamp, _, payload = _text(table[i + 1]).partition(" ")
        if now - int(stamp) / 1000 > ttl:
            continue
        try:
            doc = json.loads(payload)
            out[_text(table[i])] = Backoff(factor=float(doc["factor"]), reason=str(doc.get("reason", "")))
        except (ValueError, KeyError, TypeError):
            continue  # written by something else: not ours to interpret
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
