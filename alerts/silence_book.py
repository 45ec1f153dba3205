"""The silences in force: the config file's (``alerting.silences``) and those added at run time (the
``silence`` command, ``/api/silences``), which live in the AlertStore so that every replica and the next
process see them. The engine refreshes the stored ones on every evaluation (``keep_fresh``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from alerts.config import ConfigSilence
from alerts.silences import Silence, expire, from_config, stale
from alerts.store import AlertStore

UNREADABLE_REMOVED = "(its stored record could not be read: removed)"


class SilenceBook:
    def __init__(
        self, store: AlertStore, configured: Callable[[], Iterable[ConfigSilence]], clock: Callable[[], float]
    ) -> None:
        """``configured``: the config file's silences as of now (the config may be reloaded)."""
        self.store = store
        self.stored: list[Silence] = []  # as of the last read of the store
        self._configured = configured
        self._clock = clock

    def in_force(self) -> list[Silence]:
        """Every silence known, the config file's first (expired ones included: callers ask ``active``)."""
        return [*from_config(self._configured()), *self.stored]

    async def add(self, silence: Silence) -> None:
        await self.store.put_silence(silence)
        self.stored = [s for s in self.stored if s.id != silence.id] + [silence]

    async def expire(self, silence_id: str) -> Silence | None:
        """End a stored silence now; None when there is no such silence (config-file ones included).

        A stored record that cannot be read is removed, and reported as a silence that ended now."""
        now = self._clock()
        for silence in await self.store.load_silences():
            if silence.id == silence_id:
                expired = expire(silence, now)
                await self.store.put_silence(expired)
                self.stored = [s for s in self.stored if s.id != silence_id] + [expired]
                return expired
        if await self.store.remove_unreadable_silence(silence_id):
            return Silence(id=silence_id, starts_at=now, ends_at=now, comment=UNREADABLE_REMOVED)
        return None

    async def reload(self) -> list[Silence]:
        """Read the store again; every silence known."""
        self.stored = await self.store.load_silences()
        return self.in_force()

    def keep_fresh(self, stored: list[Silence], now: float) -> list[str]:
        """Take what the store holds, minus silences long over; returns those ids, to delete them."""
        old = [s.id for s in stored if stale(s, now)]
        self.stored = [s for s in stored if s.id not in old]
        return old
