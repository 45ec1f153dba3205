"""Failed runs in a row, continued by the next owner of an integration.

``integration_probe_consecutive_failures`` (and the Prometheus probe-down rule on it) counts a check's
failed runs in a row. The integration's owner counts them; when the integration moves to another replica,
that replica must continue the count, not start again from zero (a handover would otherwise resolve the
rule and fire it again three runs later). So the owner keeps the counts in Redis:

    <prefix>streak:<integration>   hash   check → failed runs in a row (absent: 0)

written only when a count changes from or to a failure streak — nothing for a healthy check — in one
pipelined round trip per second at most; and the replica that takes an integration over reads the hash
once and adds what it stored to the failures it has counted itself since (if it saw no success), in the
series, in /api/status and in the alert engine's count, which ``probe_down`` judges (``continued``). A check
a reload removed (or disabled) is forgotten, and its field deleted by the integration's owner (``retain``;
a takeover deletes what it finds of checks no longer configured), so a check added later under that name
starts from zero.

The same round trip deletes the entries of this replica's result stream whose results were recorded
before it (``consumed``): what is left in the stream is what no count in Redis includes yet, which is
what the next owner of an integration drains from it if this replica crashes (``monitor.cluster.streams``).
A count and the entries it includes go together; the counts go first, so a write cut short can count a
result twice in the next owner's streak, never lose one.

Redis may come back from an outage empty (no persistence). While some of its checks fail, the owner reads
the alert state's epoch (``AlertStore.epoch``, the key the alert engine reads for the same reason) every
``EPOCH_EVERY``; when it changed, the counts it holds are written back, so a takeover after the loss
still continues them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from alerts.store import AlertStore
from integration_kit.tasks import stop

if TYPE_CHECKING:
    import redis.asyncio

    from integration_kit.results import CheckResult
    from monitor.cluster.replica import Cluster
    from monitor.probe_series import ProbeSeries
    from monitor.status import StatusStore

log = logging.getLogger(__name__)

FLUSH_EVERY = 1.0
EPOCH_EVERY = 5.0  # seconds between reads of the epoch while a count is in Redis
KEEP = 7 * 86400  # a hash nobody updated for a week belongs to an integration that is gone


class Streaks:
    def __init__(self, redis: redis.asyncio.Redis, cluster: Cluster, probes: ProbeSeries,
                 status: StatusStore | None = None,
                 continued: Callable[[str, str, int], None] | None = None) -> None:
        self.redis = redis
        self.cluster = cluster
        self.probes = probes
        self.status = status  # /api/status's count of each check, continued as the series' is
        self.continued = continued  # told each count continued (the alert engine's probe_down continues it)
        self._prefix = f"{cluster.cfg.key_prefix}streak:"
        self._pending: dict[tuple[str, str], int] = {}
        self._consumed: dict[str, list[Any]] = {}  # result stream → entries to delete with the next write
        self._failing: set[tuple[str, str]] = set()  # checks with a count in Redis (as last written here)
        self._since_gain: dict[tuple[str, str], int] = {}  # failures counted here since the integration came
        self._unseeded: set[str] = set()  # integrations taken over whose stored counts are not read yet
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._epoch: str | None = None  # of the Redis contents the counts were written to

    def noted(self, result: CheckResult) -> None:
        """After the recorder counted ``result`` (its series' streak is up to date). Never raises."""
        if not self.cluster.owns(result.integration):
            return  # kept here while Redis was unreachable: the owner's count is the one that matters
        key = (result.integration, result.check)
        streak = int(self.probes.series(*key).streak or 0)
        if result.integration in self._unseeded:
            self._since_gain[key] = 0 if result.ok else self._since_gain.get(key, 0) + 1
        if streak == 0:
            if key not in self._failing:
                return  # a healthy check stays healthy: nothing to write (the hash has no entry for it)
            self._failing.discard(key)
        else:
            self._failing.add(key)
        self._pending[key] = streak
        self._wake.set()

    def consumed(self, stream: str, entry_ids: list[Any]) -> None:
        """Entries of this replica's result stream whose results were recorded (their counts are pending)."""
        self._consumed.setdefault(stream, []).extend(entry_ids)
        self._wake.set()

    def gained(self, integrations: frozenset[str]) -> None:
        self._unseeded |= integrations
        self._wake.set()

    def lost(self, integrations: frozenset[str]) -> None:
        self._unseeded -= integrations
        for table in (self._since_gain, self._pending):
            for key in [k for k in table if k[0] in integrations]:
                del table[key]  # the new owner writes them from now on
        self._failing = {k for k in self._failing if k[0] not in integrations}

    def retain(self, checks: set[tuple[str, str]], removed: set[tuple[str, str]]) -> None:
        """After a reload: forget every check not in ``checks`` (the configured, enabled ones), and delete the
        stored counts of those and of ``removed`` (configured before, not now) in integrations this replica
        owns — a previous owner's count included, which a later takeover of a check of that name would
        otherwise continue. The owner of a removed integration is still named (``Cluster.owner_of``)."""
        gone = {key for table in (self._failing, self._pending, self._since_gain) for key in table
                if key not in checks} | (removed - checks)
        if not gone:
            return
        self._failing -= gone
        for key in gone:
            self._since_gain.pop(key, None)
            self._pending.pop(key, None)
            if self.cluster.owns(key[0]):
                self._pending[key] = 0  # flushed as HDEL; a hash left empty is gone
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EPOCH_EVERY if self._failing else None):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._seed()
                await self._check_epoch()
                await self._flush()
            except (RedisError, OSError, TimeoutError) as exc:
                log.debug("cluster: failure streaks not synced (%s); trying again", type(exc).__name__)
                self._wake.set()
            await asyncio.sleep(FLUSH_EVERY)

    async def _check_epoch(self) -> None:
        """Write the counts held here back if Redis lost its data since they were written."""
        if not self._failing:
            return
        async with asyncio.timeout(5.0):
            epoch = await AlertStore(self.redis, self.cluster.config.alerting.key_prefix).epoch()
        if self._epoch is not None and epoch != self._epoch:
            log.warning("cluster: Redis lost the failure streaks (restarted empty?); writing back %d count(s)",
                        len(self._failing))
            for key in self._failing:
                self._pending.setdefault(key, int(self.probes.series(*key).streak or 0))
        self._epoch = epoch

    async def _seed(self) -> None:
        for integration in sorted(self._unseeded):
            async with asyncio.timeout(5.0):
                stored = await self.redis.hgetall(self._prefix + integration)
            self._unseeded.discard(integration)
            icfg = self.cluster.config.integrations.get(integration)
            configured = {c.name for c in icfg.checks if c.enabled} if icfg is not None else set()
            for raw_check, raw_count in stored.items():
                check = _text(raw_check)
                key = (integration, check)
                if check not in configured:  # removed (by a reload here or before the takeover): deleted
                    self._pending[key] = 0
                    continue
                since = self._since_gain.pop(key, None)
                series = self.probes.series(*key)
                if since == 0 and series.streak is not None:
                    continue  # it succeeded here since: the stored streak is over
                with contextlib.suppress(ValueError):
                    series.streak = float(int(_text(raw_count)) + (since or 0))
                    self._failing.add(key)
                    if self.status is not None:  # its next runs add to this count, as to the series'
                        self.status.entry(*key).consecutive_failures = int(series.streak)
                    if self.continued is not None:
                        self.continued(integration, check, int(series.streak))
            for key in [k for k in self._since_gain if k[0] == integration]:
                del self._since_gain[key]

    async def _flush(self) -> None:
        if not self._pending and not self._consumed:
            return
        batch, self._pending = self._pending, {}
        consumed, self._consumed = self._consumed, {}
        try:
            async with asyncio.timeout(5.0), self.redis.pipeline(transaction=False) as pipe:
                for (integration, check), streak in batch.items():
                    key = self._prefix + integration
                    if streak:
                        pipe.hset(key, check, streak)
                        pipe.expire(key, KEEP)
                    else:
                        pipe.hdel(key, check)
                for stream, entry_ids in consumed.items():
                    pipe.xdel(stream, *entry_ids)
                await pipe.execute()
        except BaseException:
            self._pending = {**batch, **self._pending}  # newer counts win
            for stream, entry_ids in consumed.items():
                self._consumed[stream] = entry_ids + self._consumed.get(stream, [])
            raise

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster-streaks")

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop(task)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._flush()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
