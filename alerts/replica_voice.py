"""What the alert engine does because several replicas share the work (alerts/voice.py says who speaks).

Fencing tokens for the shards this replica owns (``alerts/fencing.py``), the store's write hooks (a state
or log is written under its shard's token, and only if this replica speaks for it), and the outage voice:
the alerts of integrations owned elsewhere that this replica speaks for while Redis is unreachable, and
their handover once it answers (``alerts/handover.py``). Alone (no ``Ownership``) every hook says "mine".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from alerts import self_health
from alerts.fencing import Fences, shard_of, shard_of_group
from alerts.grouping import split_field
from alerts.store_sync import STORE_TIMEOUT
from alerts.voice import Voice, integration_of

if TYPE_CHECKING:
    from alerts.handover import OutageHandover
    from alerts.inputs import ConfigView, IntegrationView
    from alerts.outbox import Fence
    from alerts.rules import Condition
    from alerts.state import AlertState
    from alerts.store import Fenced
    from alerts.store_sync import StoreSync
    from integration_kit.redact import Redactor

log = logging.getLogger(__name__)


class ReplicaVoice:
    def __init__(self, voice: Voice, memory: StoreSync, *, config: Callable[[], ConfigView], redactor: Redactor,
                 fences: Fences | None = None, outage: OutageHandover | None = None) -> None:
        """``config``: the engine's current config; ``fences`` and ``outage``: with several replicas
        sharing a Redis store (then the store's writes go through ``write_fence`` and ``speaks_for``)."""
        self.voice = voice
        self.fences = fences
        self._memory = memory
        self._config = config
        self._redactor = redactor
        self._outage = outage
        if fences is not None:
            memory.fence = self.write_fence
            memory.ours = self.speaks_for

    # -- what is this replica's ---------------------------------------------------------------------
    def mine(self, states: dict[str, AlertState]) -> dict[str, AlertState]:
        """The alert states this engine speaks for (all of them when it runs alone)."""
        if not self.voice.shared:
            return states
        return {k: s for k, s in states.items() if self.voice.alert(k)}

    def group_mine(self, group_key: str, cfg: ConfigView) -> bool:
        return self.voice.group(group_key, cfg.alerting.group_by, next(iter(cfg.integrations), None))

    def speaks_for(self, kind: str, name: str) -> bool:
        """Whether this replica writes a state ("s", alert key) or log ("g", nflog field): what it owns;
        what it spoke for in an outage is handed over instead (``alerts/handover.py``)."""
        if kind == "g":
            gkey = split_field(name)[1]
            return gkey not in self.voice.outage_groups and self.group_mine(gkey, self._config())
        return name not in self.voice.outage and self.voice.alert(name)

    # -- fencing ------------------------------------------------------------------------------------
    async def take_fences(self, cfg: ConfigView) -> bool:
        """Take a fencing token for every shard this replica owns and holds none for (those it gained
        among them), before their state is reloaded: whatever the previous owner logs after that is
        refused. False when Redis could not be reached (the reload waits too)."""
        if self.fences is None:
            return True
        group_by = cfg.alerting.group_by
        # With the integrations of the alerts known: one a reload removed still has its resolve to write.
        known = {integration_of(key) for key in self._memory.states}
        shards = {shard_of(i, group_by) for i in {*cfg.integrations, *known}
                  if not self_health.is_monitor(i) and self.voice.integration(i)}
        self.fences.drop(set(self.fences.held) - shards)
        return await self.fences.acquire(shards)  # and checks those held: Redis may have come back empty

    def moved(self, integrations: Iterable[str]) -> None:
        """Integrations gained or lost: a shard lost, or lost and won back meanwhile, has a stale token."""
        if self.fences is not None:
            group_by = self._config().alerting.group_by
            self.fences.drop(shard_of(i, group_by) for i in integrations)

    def group_fence(self, group_key: str, group_by: Sequence[str]) -> Fence | None:
        """The fencing token a notification of this group is logged under (None: no fencing)."""
        shard = shard_of_group(group_key, group_by)
        return self.fences.fence(shard) if self.fences is not None and shard is not None else None

    def write_fence(self, kind: str, name: str) -> Fenced:
        shard = self._shard_of_stored(kind, name)
        if shard is None or self.fences is None:
            return None
        return shard, self.fences.held.get(shard, 0)  # none held: refused (tokens start above 0)

    def _shard_of_stored(self, kind: str, name: str) -> str | None:
        """The fencing shard of a stored state ("s", alert key) or log ("g", nflog field); None: this
        replica's own health, nobody else's to write."""
        group_by = self._config().alerting.group_by
        if kind == "g":
            return shard_of_group(split_field(name)[1], group_by)
        integration = integration_of(name)
        return None if self_health.is_monitor(integration) else shard_of(integration, group_by)

    # -- the outage voice ---------------------------------------------------------------------------
    async def exchange_outage_voice(self, cfg: ConfigView) -> None:
        if self._outage is None or self.fences is None or self._memory.redis_up is not True:
            return
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                await self._outage.exchange(self.fences.held, cfg.alerting.group_by)
        except Exception as exc:
            log.warning("alerts spoken for in the Redis outage not exchanged (%s); retrying",
                        self._redactor.text(f"{type(exc).__name__}: {exc}"))

    def speaks_in_outage(self, integration: str, icfg: IntegrationView) -> bool:
        """Whether this replica judges some alert of ``integration`` (owned elsewhere) in the outage voice."""
        voice = self.voice
        if integration in voice.outage_integrations:
            return True
        return voice.in_outage and any(voice.may_take_in_outage(integration, c.name) for c in icfg.checks)

    def judges_in_outage(self, condition: Condition) -> bool:
        """Whether this replica judges ``condition`` (of an integration owned elsewhere) in the outage voice."""
        voice = self.voice
        if condition.key in voice.outage:
            return True
        if not condition.active or not voice.may_take_in_outage(condition.integration, condition.check):
            return False
        voice.speak_in_outage(condition.key)
        self._memory.forget([condition.key], ())  # a copy read from the store long ago: not this incident's
        if voice.ownership is not None:
            voice.ownership.hold_results(frozenset(voice.outage_integrations))
        log.warning("alert %s: its owner cannot be reached (Redis unreachable); alerting for it from this replica, "
                    "which probes it", condition.key)
        return True

    def outage_group(self, gkey: str) -> None:
        """A group the outage voice speaks for: this replica's copies of its logs are another's, and old."""
        if gkey not in self.voice.outage_groups:
            self.voice.outage_groups.add(gkey)
            self._memory.forget((), [f for f in self._memory.groups if split_field(f)[1] == gkey])


def group_in(group_key: str, integrations: set[str], cfg: ConfigView) -> bool:
    """Whether a notification group belongs to one of ``integrations``."""
    group_by = cfg.alerting.group_by
    if "integration" not in group_by:
        return True  # one owner for all integrations: every group moved with them
    parts = group_key.split("|")
    index = list(group_by).index("integration")
    return index < len(parts) and parts[index] in integrations
