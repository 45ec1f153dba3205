"""What a replica said for others' integrations during a Redis outage, handed to their owners afterwards.

    <prefix>handover   hash   "<shard>|<replica id>" → {"states": {alert key: AlertState JSON},
                                                       "groups": {nflog field: GroupLog JSON}}

The outage voice (alerts/voice.py) lets a replica alert for the checks it probes while it cannot reach
their integration's owner. Once Redis answers, it writes what it holds of them here (one field per shard,
``alerts/fencing.py``, and replica) and forgets them; the owner takes the fields of the shards it holds a
fencing token for at its next evaluation and merges them into its own memory (``merge_state``,
``merge_log``), so the incident goes on under the owner's voice: no second post, and its resolve lands in
the thread the outage voice started (the Slack thread record went to Redis from that replica's notifier:
memory wins, alerts/notifiers/slack.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from alerts.codec import group_from_json, group_to_json, state_from_json, state_to_json
from alerts.fencing import shard_of, shard_of_group
from alerts.grouping import GroupLog, split_field
from alerts.state import AlertState, judged_until
from alerts.voice import Voice, integration_of

if TYPE_CHECKING:
    import redis.asyncio

    from alerts.stats import Stats
    from alerts.store_sync import StoreSync

log = logging.getLogger(__name__)

KEEP = 86400  # seconds a handover nobody took stays (its integration left the config meanwhile)


class Notifiers(Protocol):
    """The engine's sink, as far as a handover needs it (alerts.delivery.Dispatcher)."""

    def notifier_floors(self) -> Sequence[tuple[str, object]]: ...

    def pending(self, notifier: str, group_key: str) -> bool: ...

    async def synced(self) -> bool: ...


@dataclass(slots=True)
class Handed:
    """What one replica handed over for one shard."""

    states: dict[str, AlertState] = field(default_factory=dict)
    groups: dict[str, GroupLog] = field(default_factory=dict)


class Handovers:
    def __init__(self, redis: redis.asyncio.Redis, prefix: str, me: str) -> None:
        self._redis = redis
        self._key = f"{prefix}handover"
        self._me = me

    async def give(self, by_shard: Mapping[str, Handed]) -> None:
        """Leave what this replica said for each shard to its owner (raises what redis-py raises)."""
        if not by_shard:
            return
        mapping = {
            f"{shard}|{self._me}": json.dumps({
                "states": {k: state_to_json(v) for k, v in handed.states.items()},
                "groups": {k: group_to_json(v) for k, v in handed.groups.items()},
            })
            for shard, handed in by_shard.items()
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key, mapping=mapping)  # type: ignore[arg-type]
            pipe.expire(self._key, KEEP)  # an integration nobody owns any more (removed from the config)
            await pipe.execute()

    async def take(self, shards: Iterable[str]) -> list[Handed]:
        """What others handed over for ``shards`` (those this replica holds the fencing token of), removed
        from Redis. A field that does not decode is removed and skipped."""
        wanted = set(shards)
        if not wanted:
            return []
        raw = await self._redis.hgetall(self._key)
        taken, fields = [], []
        for name, value in raw.items():
            text = name.decode() if isinstance(name, bytes) else str(name)
            if text.rpartition("|")[0] not in wanted:
                continue
            fields.append(text)
            try:
                doc = json.loads(value)
                taken.append(Handed(
                    states={k: state_from_json(v) for k, v in doc["states"].items()},
                    groups={k: group_from_json(v) for k, v in doc["groups"].items()},
                ))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        if fields:
            await self._redis.hdel(self._key, *fields)
        return taken


def merge_state(mine: AlertState | None, theirs: AlertState) -> AlertState | None:
    """The state to keep when another replica hands ``theirs`` over; None: keep ``mine`` as it is. An
    incident this replica has open itself wins (a duplicate was told already); otherwise theirs."""
    if mine is not None and mine.active:
        return None
    return theirs


def merge_log(mine: GroupLog | None, theirs: GroupLog) -> GroupLog:
    """A group's notification log after a handover: theirs when this replica has none; otherwise its own,
    also knowing what theirs told (so those alerts' resolves are told too, and nothing is told twice)."""
    if mine is None:
        return theirs
    return replace(mine, sent={**theirs.sent, **mine.sent})


class OutageHandover:
    """The outage voice's exchange with the owners, once per evaluation while Redis answers (the engine's)."""

    def __init__(self, handovers: Handovers, voice: Voice, memory: StoreSync, stats: Stats,
                 sink: Notifiers | None) -> None:
        self.handovers = handovers
        self.voice = voice
        self.memory = memory
        self.stats = stats
        self.sink = sink

    async def exchange(self, held: Iterable[str], group_by: Sequence[str]) -> None:
        """Hand what the outage voice said to the owners once the view is live again; take what others
        handed to this replica for the shards it ``held`` (their fencing tokens). Raises what redis-py
        raises (the engine tries again at its next evaluation)."""
        if self.voice.outage and not self.voice.in_outage:
            await self._give(group_by)
        for handed in await self.handovers.take(held):
            self._adopt(handed)

    async def _give(self, group_by: Sequence[str]) -> None:
        voice, memory = self.voice, self.memory
        fields = [f for f in memory.groups if split_field(f)[1] in voice.outage_groups]
        if self.sink is not None:
            notifiers = [name for name, _ in self.sink.notifier_floors()]
            if any(self.sink.pending(n, g) for n in notifiers for g in voice.outage_groups):
                return  # a message of the outage voice is still on its way: its log is not final yet
            if not await self.sink.synced():
                return  # the owner would not find the Slack thread these alerts were told in yet
        by_shard: dict[str, Handed] = {}
        for key in voice.outage:
            state = memory.states.get(key)
            if state is not None:
                by_shard.setdefault(shard_of(integration_of(key), group_by), Handed()).states[key] = state
        for name in fields:
            shard = shard_of_group(split_field(name)[1], group_by)
            if shard is not None:
                by_shard.setdefault(shard, Handed()).groups[name] = memory.groups[name]
        await self.handovers.give(by_shard)
        log.info("alerts: handed %d alert(s) spoken for while Redis was unreachable to their owners (%s)",
                 len(voice.outage), ", ".join(sorted(by_shard)) or "nothing left to hand")
        memory.forget(voice.outage, fields)
        voice.outage_over()
        if voice.ownership is not None:
            voice.ownership.hold_results(frozenset())

    def _adopt(self, handed: Handed) -> None:
        memory = self.memory
        for key, theirs in handed.states.items():
            merged = merge_state(memory.states.get(key), theirs)
            if merged is None:
                continue
            memory.put_state(key, merged)
            if merged.alert is not None and merged.alert.check is not None:
                # Its results stayed with the prober during the outage: what is here is stale (as for an
                # integration taken over, ``AlertEngine.ownership_changed``), and so is any run older than
                # the prober's verdict that still arrives (sent before the outage, delivered after it).
                self.stats.forget_check(merged.alert.integration, merged.alert.check,
                                        judged_until=judged_until(merged))
        for name, theirs_log in handed.groups.items():
            memory.put_group(name, merge_log(memory.groups.get(name), theirs_log))
        log.info("alerts: took over %d alert(s) and %d group log(s) another replica spoke for while Redis was "
                 "unreachable", len(handed.states), len(handed.groups))
