"""This replica as a member of the cluster: the heartbeat loop, the view it keeps and what it tells.

Every heartbeat (``monitor.cluster.heartbeat``) renews this replica's lease and reads everyone's
(``monitor.cluster.membership``), then the view — the members holding a share now — is recomputed and,
when it changed, the new placement (``monitor.cluster.placement.Assignment``) goes to the listeners. The
loop also wakes at every announced activation, leave and lease end it knows of, so a change takes
effect at its instant, not at the next heartbeat.

Failure rules (README, "Running several replicas"):

* **Redis unreachable** (a heartbeat fails): the view freezes. This replica keeps its last share and keeps
  owning what it owned — a duplicate alert is better than silence — and takes nothing over: a lease that
  runs out meanwhile may only mean that the others cannot renew theirs either. A replica that starts while
  Redis is unreachable has no view yet and does everything alone until it can join.
* **Back after an outage** (or Redis restarted empty so quickly that no heartbeat failed: the lease is gone
  although it cannot have run out): members of the last view that hold no share in Redis now (Redis restarted
  empty and they have not re-registered, or their re-join is still announced, or they died meanwhile)
  keep it for one more TTL — long enough for the live ones to be back. A replica that must join again
  keeps its last share until its announced activation.
* **Paused** (SIGSTOP, a VM freeze, a long GC): the lease ran out without a failed heartbeat, so the
  others may already have taken over. ``may_run`` is False — no probe starts, nothing is owned — until a
  heartbeat succeeds; a replica whose lease was taken away joins again like a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from integration_kit.tasks import stop
from monitor.cluster.membership import Backoff, Beat, Membership
from monitor.cluster.placement import Assignment, Change, Listener, fleet_fingerprint, shard_key
from monitor.cluster.rendezvous import owner
from monitor.cluster.view import Member, active_ids, next_change, ran_until
from monitor.turns import in_turns

if TYPE_CHECKING:
    import redis.asyncio

    from monitor.metrics import Metrics
    from monitor.settings import Config

log = logging.getLogger(__name__)

WAKE_MARGIN = 0.005  # seconds after an announced instant: it has surely passed on this clock
CRASH_MARGIN = 1.0  # seconds before a crashed member's last heartbeat from which its runs are redone


class Cluster:
    """A ``Placement`` for a member of a cluster (see ``monitor.cluster.placement``)."""

    clustered = True

    def __init__(
        self,
        config: Config,
        *,
        redis: redis.asyncio.Redis,
        metrics: Metrics,
        address: Callable[[], str] = str,
        version: str = "",
        redact: Callable[[str], str] = str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``redact`` masks secrets in the config before it is fingerprinted (``fleet_fingerprint``)."""
        self.config = config
        self.cfg = config.monitor.cluster
        self._metrics = metrics
        self._clock = clock
        self._redact = redact
        self.fleet = fleet_fingerprint(config, redact)
        self.membership = Membership(redis, self.cfg, address=address, fleet=lambda: self.fleet, version=version)
        self._my_ids: set[str] = set()  # every id this replica had (a default id may get a suffix)
        self._listeners: list[Listener] = []
        self._records: tuple[Member, ...] = ()
        self._seen: dict[str, Member] = {}  # the last record seen of every member, departed ones included
        self._grace: dict[str, float] = {}  # members kept in the view after an outage, until (local time)
        self._active_since: dict[tuple[str, str], float] = {}  # (id, incarnation) → activation seen passed
        self._assignment = Assignment((), frozenset(), {}, {})
        self._ran_until: dict[str, float] = {}
        self._applied_at = float("-inf")  # when the placement last changed (local clock)
        self._joined = False  # a heartbeat ever succeeded
        self._solo = False  # never joined and Redis unreachable: doing everything alone
        self._degraded = False  # the last heartbeat failed
        self._keep_last = False  # joining again after an outage: keep the last share until active
        self._conflict = ""
        self._failures = 0
        self._last_error = ""
        self._last_ok = float("-inf")  # monotonic time of the last successful heartbeat
        self._leaving = False
        self._backoff_out: dict[str, Backoff] = {}
        self._backoff_in: dict[str, Backoff] = {}
        self._backoff_listeners: list[Callable[[Mapping[str, Backoff]], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()
        self._owner_saw: dict[str, bool] = {}  # check id → the last result its owner got from here was ok
        self._held: frozenset[str] = frozenset()  # integrations whose results stay here (hold_results)
        # The placement of an announced view, worked out in slices before its instant (``_anticipate``).
        self._ahead: tuple[Config, str, Assignment] | None = None
        self._ahead_task: asyncio.Task[None] | None = None
        self._guess: tuple[Config, str, tuple[str, ...]] | None = None  # (config, id, view) of the one above

    # ---- Placement --------------------------------------------------------------------------------

    @property
    def me(self) -> str:
        return self.membership.id

    @property
    def degraded(self) -> bool:
        """Redis could not be reached at the last heartbeat (the view is frozen)."""
        return self._degraded or self._solo

    def probes(self, check_id: str) -> bool:
        return check_id in self._assignment.share

    def ran_until(self, check_id: str) -> float:
        return self._ran_until.get(check_id, float("-inf"))

    def owns(self, integration: str) -> bool:
        return self.owner_of(integration) == self.me and self.may_run()

    def owner_of(self, integration: str) -> str | None:
        found = self._assignment.integration_owner.get(integration)
        if found is None and integration not in self.config.integrations and self._assignment.members:
            # Removed by a reload: its alerts still need their resolve told, by one replica — the one the
            # same hashing names (the owner it had, while the members stay the same).
            found = owner(shard_key(integration, self.config.alerting.group_by), self._assignment.members)
        return found

    def prober_of(self, check_id: str) -> str | None:
        return self._assignment.check_owner.get(check_id)

    def address_of(self, replica: str) -> str | None:
        """Where a member's HTTP server listens, as its last record read says; None if unknown."""
        return next((m.address for m in self._records if m.id == replica and m.address), None)

    def may_run(self) -> bool:
        if self._degraded or self._solo:
            return True  # fail open: keep the last share
        if time.monotonic() - self._last_ok < self.cfg.ttl:
            return True
        self._poke.set()  # the lease may have run out while paused: find out now
        return False

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # ---- the outage voice (alerts/voice.py) ------------------------------------------------------------

    def delivered(self, check_id: str, ok: bool) -> None:
        """A result of ``check_id`` reached its integration's owner's stream (monitor.cluster.streams)."""
        self._owner_saw[check_id] = ok

    def owner_saw_failing(self, check_id: str) -> bool:
        return self._owner_saw.get(check_id) is False

    def hold_results(self, integrations: frozenset[str]) -> None:
        if integrations != self._held:
            log.info("cluster: results of %s kept here until the alerts spoken for them in the Redis outage are "
                     "handed over", ",".join(sorted(integrations)) or "nothing")
        self._held = integrations

    def holds(self, integration: str) -> bool:
        return integration in self._held

    @property
    def members(self) -> tuple[str, ...]:
        return self._assignment.members

    @property
    def share(self) -> frozenset[str]:
        return self._assignment.share

    def owned(self) -> frozenset[str]:
        return self._assignment.owned(self.me)

    # ---- probe back-off, announced by an integration's owner ------------------------------------------

    def announce_backoff(self, integration: str, factor: float, reason: str) -> None:
        """The owner's quota reader slows (factor > 1) or restores an integration's probes, everywhere:
        the announcement travels with the heartbeats (renewed every beat, forgotten a TTL after the owner
        stops renewing it) and applies here at once."""
        if factor > 1.0:
            self._backoff_out[integration] = Backoff(factor=factor, reason=reason)
        else:
            self._backoff_out.pop(integration, None)
        self._publish_backoff()
        self._poke.set()

    def on_backoff(self, listener: Callable[[Mapping[str, Backoff]], None]) -> None:
        """``listener(table)``: integration → back-off in force, after every change (absent = none)."""
        self._backoff_listeners.append(listener)

    def backoff(self) -> dict[str, Backoff]:
        table = {i: b for i, b in self._backoff_in.items() if not self.owns(i)}
        table.update({i: b for i, b in self._backoff_out.items() if self.owns(i)})
        return table

    def _publish_backoff(self) -> None:
        table = self.backoff()
        for listener in self._backoff_listeners:
            try:
                listener(table)
            except Exception:
                log.exception("cluster: a back-off listener failed")

    # ---- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join (one heartbeat, so the share is known before the scheduler starts), then keep beating."""
        await self._beat_and_apply()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="cluster-heartbeat")

    async def leave(self, longest: float) -> None:
        """Graceful shutdown: announce the leave, keep the share until it takes effect (every replica
        switches then), at most ``longest`` seconds, then hold nothing."""
        self._leaving = True
        until = self._clock()
        try:
            async with asyncio.timeout(max(self.cfg.heartbeat, 1.0)):
                beat = await self.membership.beat("leave")
            self._absorb(beat)
            me = next((m for m in beat.members if m.id == self.me), None)
            if me is not None and me.leaving_at is not None:
                until = me.leaving_at
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cluster: could not announce the leave (%s); the share moves when the lease runs out",
                        type(exc).__name__)
        wait = min(max(0.0, until - self._clock()), max(0.0, longest))
        log.info("cluster: leaving; share handed over in %.1fs", wait)
        await asyncio.sleep(wait)
        # The others without this replica, as they switch now: what still reaches it (read from its stream
        # before it closes) goes to each integration's new owner.
        self._apply(self._clock(), members=tuple(m for m in self._assignment.members if m != self.me))

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop(task)
        ahead, self._ahead_task = self._ahead_task, None
        await stop(ahead)
        if self._joined:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self.membership.beat("depart")

    def on_config(self, config: Config) -> None:
        """New checks (ran by nobody yet) or removed ones: recompute the placement with the same members."""
        self.config = config
        self.fleet = fleet_fingerprint(config, self._redact)
        self._records = self._in_my_fleet(self._records)
        self._apply(self._clock(), members=self._assignment.members, force=True)

    def _in_my_fleet(self, records: tuple[Member, ...]) -> tuple[Member, ...]:
        """``records`` with this replica's own in the fleet of its config now. A reload changes the fleet at
        once, Redis hears of it at the next heartbeat: the record as last read (or as read by a heartbeat
        under way when the reload came) has the old one, and the view made of it left this replica out of
        its own fleet — alone, it dropped its share and its integrations, and took them back a heartbeat
        later."""
        incarnation = self.membership.incarnation
        return tuple(replace(m, fleet=self.fleet) if m.id == self.me and m.incarnation == incarnation
                     and m.fleet != self.fleet else m for m in records)

    # ---- the loop -----------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            now = self._clock()
            wake = now + self.cfg.heartbeat
            if not self.degraded:
                upcoming = [t for t in (next_change(self._records, now), min(self._grace.values(), default=None))
                            if t is not None]
                if upcoming:
                    wake = min(wake, min(upcoming) + WAKE_MARGIN)
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - self._clock())):  # not wait_for: see alerts/engine.py
                    await self._poke.wait()
            if not self.degraded and not self._leaving:
                # Announced joins and leaves take effect now, at their instant, before the round trip; a
                # lease that ran out waits for the heartbeat to confirm it was not renewed meanwhile.
                self._apply(self._clock(), confirmed=False)
            try:
                await self._beat_and_apply()
            except Exception:  # a bug here must not end the membership: the lease would run out
                log.exception("cluster: heartbeat round failed")

    async def _beat_and_apply(self) -> None:
        if self._leaving:
            return
        started = time.monotonic()
        timeout = max(self.cfg.heartbeat, 1.0)
        try:
            async with asyncio.timeout(timeout):
                beat = await self.membership.beat(backoff={i: b for i, b in self._backoff_out.items() if self.owns(i)})
        except (RedisError, OSError, TimeoutError) as exc:
            if self._stood_still(started, timeout):
                return
            self._beat_failed(exc)
            return
        if beat.outcome == "conflict":
            self._conflicted(beat)
            return
        was_degraded = self.degraded
        # Joined again although the lease cannot have run out (the beat that last renewed it began less than a
        # TTL ago): Redis lost the membership — restarted empty, its connection retried without a failed
        # heartbeat — and nobody took this replica's share; treated as the end of an outage, not a pause.
        forgotten = self._joined and beat.outcome == "joined" and started - self._last_ok < 0.9 * self.cfg.ttl
        back = was_degraded or forgotten
        if self._failures:
            log.info("cluster: Redis reachable again after %d failed heartbeat(s)", self._failures)
        self._failures, self._last_error, self._conflict = 0, "", ""
        self._degraded = self._solo = False
        self._last_ok = started
        lapsed = self._joined and beat.outcome == "joined"
        if back and self._joined:
            # Back after an outage: the others of the last view may not have re-registered yet, or only just
            # (a re-join is announced a heartbeat and a half ahead): they keep their share for one more TTL.
            until = self._clock() + self.cfg.ttl
            self._grace = {m: until for m in self._assignment.members if m != self.me}
        if beat.outcome == "joined":
            # Joining again after an outage keeps the last share until the activation; after a pause
            # (no failed heartbeat), the others have taken it over already: hold nothing until then.
            self._keep_last = back and bool(self._assignment.members)
            if forgotten:
                log.warning("cluster: Redis lost this replica's membership (restarted empty?); joining again, "
                            "keeping the current share until then")
            elif lapsed and not was_degraded:
                log.warning("cluster: this replica's lease ran out without a failed heartbeat (was the process "
                            "paused?); joining again, holding nothing until then")
        self._joined = True
        self._absorb(beat)
        self._apply(self._clock())
        self._anticipate(self._clock())

    def _absorb(self, beat: Beat) -> None:
        self._records = self._in_my_fleet(beat.members)
        for member in beat.members:
            self._seen[member.id] = member
        if beat.backoff != self._backoff_in:
            self._backoff_in = dict(beat.backoff)
            self._publish_backoff()
        self._metrics.cluster_members.set(len(active_ids(self._records, self._clock(), self.fleet)))

    def _stood_still(self, started: float, timeout: float) -> bool:
        """A heartbeat that failed only because this process stood still while it was under way (paused, a
        frozen VM): its timeout went off a heartbeat or more late, and the lease may have run out meanwhile.
        That is a pause, not a Redis outage: the others may have taken the share over, so ``may_run`` stays
        False until a heartbeat succeeds (an outage would keep the share, and the integrations, running)."""
        now = time.monotonic()
        if not self._joined or self.degraded or now - started < timeout + self.cfg.heartbeat:
            return False
        if now - self._last_ok < self.cfg.ttl:
            return False
        log.warning("cluster: a heartbeat failed after this process stood still for %.1fs (was it paused?); "
                    "holding nothing until a heartbeat says where it stands", now - started)
        return True

    def _beat_failed(self, exc: BaseException) -> None:
        self._failures += 1
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        if not self._joined and not self._solo:
            self._solo = True
            log.error("cluster: Redis unreachable before this replica could join (%s): probing and alerting for "
                      "everything alone until it can", type(exc).__name__)
            self._apply(self._clock(), members=(self.me,))
        elif not self._degraded:
            self._degraded = True
            log.warning("cluster: heartbeat failed (%s); keeping the current share and taking nothing over until "
                        "Redis answers", type(exc).__name__)

    def _conflicted(self, beat: Beat) -> None:
        if not self._conflict:
            log.error("cluster: replica id %r is held by another process (%s): a previous run of this replica that "
                      "did not leave cleanly, or another replica with the same monitor.cluster.replica_id; waiting "
                      "for its lease to expire", self.me, beat.holder)
        self._conflict = beat.holder
        self._degraded = False
        if not self._joined:
            self._apply(self._clock(), members=tuple(sorted({m for m in self._assignment.members if m != self.me})))

    # ---- view → placement ----------------------------------------------------------------------------

    def _view(self, now: float, *, confirmed: bool = True) -> tuple[str, ...]:
        """The members holding a share at ``now``. ``confirmed``: the records were just read, so a lease
        that ran out in them really did; otherwise such a member still counts until the next heartbeat."""
        records = tuple(self._steady(m, now) for m in self._records)
        if not confirmed:
            records = tuple(replace(m, expires_at=float("inf")) if m.expires_at <= now else m for m in records)
        ids = set(active_ids(records, now, self.fleet))
        self._active_since = {(m.id, m.incarnation): m.active_at for m in records if m.active_at <= now}
        left = {m.id for m in self._records if m.leaving_at is not None and m.leaving_at <= now}
        for member, until in list(self._grace.items()):
            if now >= until:
                del self._grace[member]
            elif member not in left:
                ids.add(member)
        if self.me in ids:
            self._keep_last = False
        elif self._keep_last:
            return tuple(sorted({self.me if m in self._my_ids else m for m in self._assignment.members}))
        return tuple(sorted(ids))

    def _steady(self, member: Member, now: float) -> Member:
        """A member once seen active stays active. Its times come from Redis' clock, converted with each
        heartbeat's own estimate of the offset, which moves by a few milliseconds from one beat to the next
        (half a round trip, more on a loaded machine): enough to move a just-passed activation back after
        ``now`` for a moment, and the view would flap (ownership moving there and back). The same record
        only: a member that registers again (a new activation, a heartbeat or more apart) is a new one."""
        seen = self._active_since.get((member.id, member.incarnation))
        if seen is not None and member.active_at > now and abs(member.active_at - seen) < self.cfg.heartbeat:
            return replace(member, active_at=seen)
        return member

    def _anticipate(self, now: float) -> None:
        """A join or a graceful leave is announced (a heartbeat and a half ahead), or a member missed heartbeats
        (crashed? its lease runs out within the TTL): work the placement of the view that makes out now, a slice
        at a time, so that at its instant ``_apply`` only switches to it. Worked out at the instant, 50,000
        checks held the loop ~0.1 s (heartbeats, /healthz and probes waiting). A guess that does not come true
        (the view then is another: the member beat again) is not used."""
        lapsing = now + self.cfg.ttl - 2 * self.cfg.heartbeat  # a lease renewed since expires later than this
        upcoming = [t for m in self._records for t in (m.active_at, m.leaving_at) if t is not None and t > now]
        upcoming += [m.expires_at for m in self._records if now < m.expires_at < lapsing and m.id != self.me]
        members = tuple(sorted(active_ids(self._records, min(upcoming) + WAKE_MARGIN, self.fleet))) if upcoming else ()
        guess = (self.config, self.me, members)
        if self._guess is not None and self._guess[0] is self.config and self._guess[1:] == guess[1:]:
            return  # worked out, or under way
        if self._ahead_task is not None and not self._ahead_task.done():
            self._ahead_task.cancel()
        self._ahead, self._guess = None, None  # (a guess that did not come true: 5 MB at 50,000 checks)
        if not members or members == self._assignment.members or self.degraded:
            return
        self._guess = guess
        self._ahead_task = asyncio.get_running_loop().create_task(
            self._work_out(self.config, members, self.me), name="cluster-placement-ahead")

    async def _work_out(self, config: Config, members: tuple[str, ...], me: str) -> None:
        self._ahead = (config, me, await in_turns(Assignment.in_slices(config, members, me)))

    def _placement(self, members: tuple[str, ...]) -> Assignment:
        """The placement of ``members``: the one worked out ahead if it is that view's (same config, same id)."""
        ahead = self._ahead
        if ahead is not None and ahead[0] is self.config and ahead[1] == self.me and ahead[2].members == members:
            self._ahead, self._guess = None, None
            return ahead[2]
        return Assignment.compute(self.config, members, self.me)

    def _apply(
        self, now: float, *, members: tuple[str, ...] | None = None, force: bool = False, confirmed: bool = True
    ) -> None:
        if members is None:
            members = self._view(now, confirmed=confirmed)
        old = self._assignment
        if members == old.members and not force:
            return
        # The instant of the change: an announced join or leave switched every replica at its instant, so
        # runs due since then are this replica's to catch up on; other changes take effect now.
        announced = [t for m in self._records for t in (m.active_at, m.leaving_at)
                     if t is not None and self._applied_at < t <= now]
        switch = max(announced, default=now)
        self._applied_at = now
        self._my_ids.add(self.me)
        new = self._placement(members)
        gained = new.share - old.share
        margin = max(CRASH_MARGIN, self.cfg.heartbeat)
        by_previous = {previous: ran_until(self._seen.get(previous), switch=switch, ttl=self.cfg.ttl, margin=margin)
                       for previous in old.members}  # (a check's previous prober is one of them)
        since = {cid: by_previous.get(old.check_owner.get(cid, ""), float("-inf")) for cid in gained}
        # Kept for checks gained earlier and still in the share: the scheduler adds a takeover's jobs a slice at
        # a time, and a later change may come before the last slice (its sync then adds what remains).
        kept = {cid: t for cid, t in self._ran_until.items() if cid in new.share and cid not in since}
        self._ran_until = kept | {cid: t for cid, t in since.items() if t != float("-inf")}
        owned_before, owned_now = old.owned(self.me), new.owned(self.me)
        leased = {m.id for m in self._records}
        change = Change(
            checks_gained=since, checks_lost=frozenset(old.share - new.share),
            integrations_gained=frozenset(owned_now - owned_before),
            integrations_lost=frozenset(owned_before - owned_now),
            # A previous owner that left gracefully passes on what reaches it late; one without a lease any
            # more (crashed, paused) cannot: its stream is drained by each integration's new owner.
            orphaned={i: previous for i in owned_now - owned_before
                      if (previous := old.integration_owner.get(i)) is not None and previous != self.me
                      and previous not in members and previous not in leased},
        )
        self._assignment = new
        if members != old.members:
            log.info("cluster: members %s → %s; this replica (%s) probes %d check(s), owns %d integration(s)",
                     ",".join(old.members) or "-", ",".join(members) or "-", self.me, len(new.share),
                     len(owned_now))
        m = self._metrics
        m.owned_checks.set(len(new.share))
        m.owned_integrations.set(len(owned_now))
        for kind, count in (("check", len(change.checks_gained) + len(change.checks_lost)),
                            ("integration", len(change.integrations_gained) + len(change.integrations_lost))):
            if count:
                m.ownership_changes.labels(unit=kind).inc(count)
        if change:
            for listener in self._listeners:
                try:
                    listener(change)
                except Exception:
                    log.exception("cluster: a listener failed on a change of share")
            if change.integrations_gained or change.integrations_lost:
                self._publish_backoff()

    # ---- status ------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self._clock()
        state = ("solo: Redis unreachable before joining" if self._solo else
                 "degraded: Redis unreachable, share frozen" if self._degraded else
                 f"conflict: replica id held by another process ({self._conflict})" if self._conflict else
                 "paused: lease lapsed, rejoining" if not self.may_run() else
                 "member" if self.me in self._assignment.members else "joining")
        members = []
        for member in self._records:
            members.append({
                "id": member.id, "address": member.address, "version": member.version,
                "same_config": member.fleet == self.fleet,
                "active": member.active(now), "active_at": member.active_at, "leaving_at": member.leaving_at,
                "lease_expires_in": round(member.expires_at - now, 3),
            })
        return {
            "enabled": True,
            "replica_id": self.me,
            "state": state,
            "heartbeat": self.cfg.heartbeat,
            "ttl": self.cfg.ttl,
            "view": list(self._assignment.members),
            "members": members,
            "failed_heartbeats": self._failures,
            "last_error": self._last_error or None,
            "owned_checks": len(self._assignment.share),
            "owned_integrations": sorted(self.owned()),
            "probe_backoff": {i: {"factor": b.factor, "reason": b.reason} for i, b in sorted(self.backoff().items())},
        }

    def ready(self) -> tuple[bool, str]:
        if self._conflict:
            return False, f"replica id {self.me!r} is held by another live process"
        return True, ""

