"""Persistence of alert state, the notification log and silences.

In Redis when the daemon has one (hashes under a configurable prefix, default ``im:alerts:``), else in
memory. Both go through the same JSON encoding (``alerts/codec.py``), so the memory store exercises the
same code path.

    <prefix>state      hash  alert key → AlertState JSON
    <prefix>nflog      hash  "<notifier>|<group key>" → GroupLog JSON (the notification log; the notifier's
                             lane writes it once delivered, alerts/outbox.py)
    <prefix>silences   hash  silence id → Silence JSON
    <prefix>epoch      string  a random id, set by the first process that finds it missing: when it changes,
                             Redis lost what it held (restarted empty) and each process writes back what
                             it knows (``alerts/store_sync.py``)

Before the notification log was kept per notifier it was one hash, ``<prefix>groups`` (group key →
GroupLog JSON); ``adopt_legacy_log`` takes it over once, for every notifier, so an incident open across
the upgrade is neither posted again nor left without its resolve.

When several replicas share the Redis, states and logs are written under their integration's fencing
token (``write``, one script: ``alerts/fencing.py``): what a replica that lost an integration without
knowing it still had to save is refused, never written over the new owner's.

Redis errors propagate (``redis.exceptions.RedisError``/``OSError``): the engine keeps its in-memory
copy, reports Redis down and writes again on the next evaluation.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from alerts.codec import group_from_json, group_to_json, state_from_json, state_to_json
from alerts.config import DEFAULT_KEY_PREFIX
from alerts.grouping import GroupLog
from alerts.memo import LastMade
from alerts.silences import Silence
from alerts.state import AlertState

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

# KEYS: the old one-hash log, the per-notifier log. ARGV: notifier names. Every old entry becomes each
# notifier's (unless that one has its own already), then the old hash goes: atomic, so N replicas
# starting at once adopt it once.
_ADOPT = """
local old = redis.call('HGETALL', KEYS[1])
for i = 1, #old, 2 do
  for j = 1, #ARGV do redis.call('HSETNX', KEYS[2], ARGV[j] .. '|' .. old[i], old[i + 1]) end
end
redis.call('DEL', KEYS[1])
return #old / 2
"""


# KEYS: state hash, nflog hash, fence hash. ARGV: 5 per entry: 's' (state) or 'g' (log), field, value ('' =
# delete), fence shard ('' = unfenced), fence token. An entry whose shard's token is not the given one is
# not written; the reply lists them as '<kind>:<field>'.
_WRITE = """
local refused = {}
for i = 1, #ARGV, 5 do
  local hash = KEYS[1]
  if ARGV[i] == 'g' then hash = KEYS[2] end
  local field, value, shard = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if shard ~= '' and redis.call('HGET', KEYS[3], shard) ~= ARGV[i + 4] then
    refused[#refused + 1] = ARGV[i] .. ':' .. field
  elseif value == '' then
    redis.call('HDEL', hash, field)
  else
    redis.call('HSET', hash, field, value)
  end
end
return refused
"""

Fenced = tuple[str, int] | None  # (shard, token) a write needs to be current; None: unfenced


class AlertStore:
    """Redis-backed when ``redis`` is given, otherwise a process-local dict with the same behaviour."""

    def __init__(self, redis: redis.asyncio.Redis | None, prefix: str = DEFAULT_KEY_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix
        self._memory: dict[str, dict[str, str]] = {}
        self._reported: set[tuple[str, str]] = set()  # unreadable silence records already logged
        self._alert_texts: LastMade[str, str] = LastMade()  # each alert's stored text (``state_to_json``)

    @property
    def durable(self) -> bool:
        return self.redis is not None

    # -- hash primitives ------------------------------------------------------------------------
    async def _hgetall(self, name: str) -> dict[str, str]:
        if self.redis is None:
            return dict(self._memory.get(name, {}))
        raw = await self.redis.hgetall(self.prefix + name)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def _hget(self, name: str, field: str) -> str | None:
        if self.redis is None:
            return self._memory.get(name, {}).get(field)
        value = await self.redis.hget(self.prefix + name, field)
        return None if value is None else _text(value)

    async def _write(self, name: str, upserts: Mapping[str, str], deletes: Iterable[str]) -> None:
        deletes = [d for d in deletes if d not in upserts]
        if self.redis is None:
            table = self._memory.setdefault(name, {})
            table.update(upserts)
            for field in deletes:
                table.pop(field, None)
            return
        if not upserts and not deletes:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            if upserts:
                pipe.hset(self.prefix + name, mapping=dict[Any, Any](upserts))
            if deletes:
                pipe.hdel(self.prefix + name, *deletes)
            await pipe.execute()

    # -- alert state and notification log -------------------------------------------------------
    async def load_states(self) -> dict[str, AlertState]:
        return {k: state_from_json(v) for k, v in (await self._hgetall("state")).items()}

    async def save_states(self, upserts: Mapping[str, AlertState], deletes: Iterable[str] = ()) -> None:
        deletes = list(deletes)
        for key in deletes:
            self._alert_texts.forget(key)
        await self._write("state", {k: self._state_text(v) for k, v in upserts.items()}, deletes)

    def _state_text(self, state: AlertState) -> str:
        return state_to_json(state, self._alert_texts)

    async def load_groups(self) -> dict[str, GroupLog]:
        return {k: group_from_json(v) for k, v in (await self._hgetall("nflog")).items()}

    async def save_groups(self, upserts: Mapping[str, GroupLog], deletes: Iterable[str] = ()) -> None:
        await self._write("nflog", {k: group_to_json(v) for k, v in upserts.items()}, deletes)

    async def write(
        self,
        states: Mapping[str, AlertState | None],
        groups: Mapping[str, GroupLog | None],
        fence: Callable[[str, str], Fenced],
    ) -> set[tuple[str, str]]:
        """States and logs (None: delete) in one atomic round, each under ``fence(kind, field)`` (kind "s"
        or "g"): the (kind, field) pairs refused because their fencing token is no longer current."""
        if self.redis is None:
            await self.save_states({k: v for k, v in states.items() if v is not None},
                                   [k for k, v in states.items() if v is None])
            await self.save_groups({k: v for k, v in groups.items() if v is not None},
                                   [k for k, v in groups.items() if v is None])
            return set()
        args: list[str | int] = []
        for key in (k for k, v in states.items() if v is None):
            self._alert_texts.forget(key)
        for kind, table, encode in (("s", states, self._state_text), ("g", groups, group_to_json)):
            for name, value in table.items():
                fenced = fence(kind, name)
                args += [kind, name, "" if value is None else encode(value),  # type: ignore[arg-type]
                         *(("", 0) if fenced is None else fenced)]
        if not args:
            return set()
        keys = [self.prefix + "state", self.prefix + "nflog", self.prefix + "fence"]
        refused = await self.redis.eval(_WRITE, len(keys), *keys, *args)
        return {(kind, name) for kind, _, name in (_text(r).partition(":") for r in refused)}

    async def epoch(self) -> str | None:
        """The id of Redis' current contents (set now if missing); None for the memory store."""
        if self.redis is None:
            return None
        key = self.prefix + "epoch"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, uuid.uuid4().hex, nx=True)
            pipe.get(key)
            _, value = await pipe.execute()
        return _text(value)

    async def adopt_legacy_log(self, notifiers: Sequence[str]) -> int:
        """Take the previous version's one-hash notification log over for ``notifiers``; the groups adopted."""
        if self.redis is None or not notifiers:
            return 0
        keys = [self.prefix + "groups", self.prefix + "nflog"]
        return int(await self.redis.eval(_ADOPT, len(keys), *keys, *notifiers))

    # -- silences -------------------------------------------------------------------------------
    async def load_silences(self) -> list[Silence]:
        """Every stored silence that can be read. One that cannot (written by hand, by a bug, by another
        version) is skipped — it mutes nothing and never breaks a listing — with one warning per record
        and process; ``remove_unreadable_silence`` takes it out by id."""
        items = []
        for silence_id, raw in (await self._hgetall("silences")).items():
            try:
                items.append(_decode_silence(raw))
            except _UNREADABLE as exc:
                if (silence_id, raw) not in self._reported:
                    self._reported.add((silence_id, raw))
                    log.warning("stored silence %r cannot be read (%s: %s); it is ignored. Expire it by id "
                                "(DELETE /api/silences/ID or `silence expire ID`) to remove it",
                                silence_id[:80], type(exc).__name__, str(exc)[:200])
        return sorted(items, key=lambda s: (s.starts_at, s.id))

    async def remove_unreadable_silence(self, silence_id: str) -> bool:
        """Delete the stored record ``silence_id`` if it cannot be read as a silence; True if it did."""
        raw = await self._hget("silences", silence_id)
        if raw is None:
            return False
        try:
            _decode_silence(raw)
        except _UNREADABLE:
            await self._write("silences", {}, [silence_id])
            return True
        return False

    async def put_silence(self, silence: Silence) -> None:
        await self._write("silences", {silence.id: json.dumps(silence.to_dict())}, ())

    async def delete_silences(self, ids: Iterable[str]) -> None:
        await self._write("silences", {}, list(ids))

    async def ping(self) -> None:
        if self.redis is not None:
            await self.redis.ping()


# What a damaged record raises while being decoded (deep nesting: RecursionError).
_UNREADABLE = (ValueError, TypeError, KeyError, RecursionError)


def _decode_silence(raw: str) -> Silence:
    return Silence.from_dict(json.loads(raw))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
