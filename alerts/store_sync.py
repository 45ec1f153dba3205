"""The engine's memory — alert states and the notification log — kept in step with the AlertStore.

Loaded once at start (retried on every evaluation until it worked; what this process learnt meanwhile
wins over what was stored), the stored silences re-read on every evaluation, and only what changed
written back. Redis trouble never stops an evaluation: every round trip is bounded by ``STORE_TIMEOUT``,
changes stay dirty until a write succeeds, and the outcome of the last round (``redis_up``, with the
redacted error) is the engine's own verdict on its store (``integration_monitor_component_ok``); whether
Redis is up is the daemon's Redis health check's to say (``integration_monitor_redis_up``).

Memory wins: Redis may come back from an outage empty (no persistence). Every sync reads the store's
epoch (``AlertStore.epoch``: a random id the first process to miss it sets again); when it changed, every
state and log this process holds is written back. With several replicas, writes go under the fencing
token of their integration (``fence``) and only for what this replica speaks for (``ours``): a replica's
copy of another's state is never written, and a stale owner's write is refused (dropped here).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from alerts.grouping import GroupLog
from alerts.silence_book import SilenceBook
from alerts.state import AlertState
from alerts.store import AlertStore, Fenced

if TYPE_CHECKING:
    from integration_kit.redact import Redactor

log = logging.getLogger(__name__)

# redis-py retries a refused connection ten times with backoff: bound each store round so a dead Redis
# slows an evaluation by at most this much (and only once per evaluation: see persist).
STORE_TIMEOUT = 3.0


class StoreSync:
    def __init__(self, store: AlertStore, silences: SilenceBook, *, redactor: Redactor) -> None:
        self.store = store
        self.silences = silences
        self.states: dict[str, AlertState] = {}
        self.groups: dict[str, GroupLog] = {}
        self.redis_up: bool | None = None  # None: not tried yet, or no Redis (memory store)
        self.redis_error = ""  # redacted
        self._redactor = redactor
        self._dirty_states: set[str] = set()
        self._dirty_groups: set[str] = set()
        self._loaded = False
        self._epoch: str | None = None
        # Several replicas (the engine sets these): the fencing token a write of ("s"|"g", field) needs, and
        # whether this replica speaks for it at all (what it does not is never written from here).
        self.fence: Callable[[str, str], Fenced] = lambda kind, name: None
        self.ours: Callable[[str, str], bool] = lambda kind, name: True

    # -- changes (written back by persist) ---------------------------------------------------------
    def put_state(self, key: str, state: AlertState) -> None:
        self.states[key] = state
        self._dirty_states.add(key)

    def drop_state(self, key: str) -> None:
        del self.states[key]
        self._dirty_states.add(key)

    def put_group(self, key: str, log_entry: GroupLog | None) -> None:
        """Set a group's notification log; None forgets the group."""
        if log_entry is None:
            self.groups.pop(key, None)
        else:
            self.groups[key] = log_entry
        self._dirty_groups.add(key)

    def forget(self, states: Iterable[str], groups: Iterable[str]) -> None:
        """Drop this process's copies, not the stored ones (they are, or become, another replica's)."""
        for key in states:
            self.states.pop(key, None)
            self._dirty_states.discard(key)
        for key in groups:
            self.groups.pop(key, None)
            self._dirty_groups.discard(key)

    # -- rounds with the store ----------------------------------------------------------------------
    def _redis_result(self, error: BaseException | None) -> None:
        if not self.store.durable:
            return
        self.redis_up = error is None
        detail = "" if error is None else f"{type(error).__name__}: {error}"
        self.redis_error = self._redactor.text(detail)

    async def load(self) -> None:
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                states = await self.store.load_states()
                groups = await self.store.load_groups()
                silences = await self.store.load_silences()
        except Exception as exc:
            self._redis_result(exc)
            log.warning("alert state not loaded (%s); retrying on the next evaluation", self.redis_error or exc)
            return
        self._redis_result(None)
        # What this process learnt before the load succeeded wins over what was stored.
        self.states = {**states, **self.states}
        self.groups = {**groups, **self.groups}
        self.silences.stored = silences
        self._loaded = True
        log.info("alert state loaded: %d alerts, %d groups, %d silences (%s)", len(states), len(groups),
                 len(silences), "redis" if self.store.durable else "memory")

    async def reload(self, states_of: Callable[[str], bool], groups_of: Callable[[str], bool]) -> bool:
        """Take what the store holds for some alerts and groups (those another replica kept until now),
        replacing this process's copy of them; False (nothing changed) when the store cannot be read."""
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                states = await self.store.load_states()
                groups = await self.store.load_groups()
        except Exception as exc:
            self._redis_result(exc)
            log.warning("alert state of integrations taken over not loaded (%s); retrying", self.redis_error or exc)
            return False
        self._redis_result(None)
        self.states = {k: v for k, v in self.states.items() if not states_of(k)}
        self.states.update({k: v for k, v in states.items() if states_of(k)})
        self._dirty_states = {k for k in self._dirty_states if not states_of(k)}
        self.groups = {k: v for k, v in self.groups.items() if not groups_of(k)}
        self.groups.update({k: v for k, v in groups.items() if groups_of(k)})
        self._dirty_groups = {k for k in self._dirty_groups if not groups_of(k)}
        return True

    async def sync(self, now: float) -> None:
        """Before an evaluation: load if not loaded yet, else check Redis and re-read the silences."""
        if not self._loaded:
            await self.load()
            if not self._loaded:
                return
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                epoch = await self.store.epoch()
                silences = await self.store.load_silences()
        except Exception as exc:
            self._redis_result(exc)
            return
        self._redis_result(None)
        if epoch != self._epoch:
            if self._epoch is not None:
                log.warning("Redis lost the alert state (restarted empty?); writing back what this process holds")
                self._dirty_states.update(self.states)
                self._dirty_groups.update(self.groups)
            self._epoch = epoch
        old = self.silences.keep_fresh(silences, now)
        if old:
            try:
                async with asyncio.timeout(STORE_TIMEOUT):
                    await self.store.delete_silences(old)
            except Exception as exc:
                self._redis_result(exc)

    async def persist(self, *, even_if_down: bool = False) -> None:
        """Write what changed since the last successful write."""
        if not self._dirty_states and not self._dirty_groups:
            return
        if self.redis_up is False and not even_if_down:
            return  # Redis failed this evaluation already; the changes stay dirty for the next one
        states = {k: self.states.get(k) for k in self._dirty_states if self.ours("s", k)}
        groups = {k: self.groups.get(k) for k in self._dirty_groups if self.ours("g", k)}
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                refused = await self.store.write(states, groups, self.fence)
        except Exception as exc:
            self._redis_result(exc)
            log.warning("alert state not saved (%s); retrying on the next evaluation", self.redis_error)
            return
        if refused:
            log.warning("alert state of %d alert(s)/group(s) not saved: another replica owns their integration "
                        "now (fencing token superseded)", len(refused))
        self._dirty_states.clear()
        self._dirty_groups.clear()
