"""Which alerts this engine speaks for, when several replicas of the daemon share one Redis.

Every replica runs an alert engine, but an integration's alerts are evaluated and sent by one of them at a
time: the integration's owner (the daemon decides who that is and says so through ``Ownership``). The
others leave those alerts alone — they neither evaluate them, nor persist them, nor export them — and
a replica that becomes the owner takes the integration's fencing token (``alerts/fencing.py``: what a
replica that lost it without knowing still has queued is refused) and then reloads them from the store.
The monitor's own health is each replica's own business: its alerts belong to the pseudo-integration
``_monitor@<replica id>``.

Without ``Ownership`` (a daemon on its own) the engine speaks for everything, ``_monitor`` included.

**Outage voice.** While Redis is unreachable (``Ownership.degraded``), a result probed here for an
integration owned elsewhere cannot reach its owner. Rather than keep that check's new incident silent
until Redis answers, this replica also speaks for the alerts about the checks it probes (its last known
share) that start while it cannot reach the owner — fail open: a duplicate is better than silence. Not
for a check whose last result the owner did receive was a failure (``owner_saw_failing``): that incident
is the owner's, it has it already. What it said meanwhile (alert states, notification logs) is handed to
the owner once Redis answers (``alerts/handover.py``), and the results of those integrations stay here
until then (``hold_results``), so the owner judges them with the incident in hand and does not post again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from alerts.self_health import MONITOR, is_monitor


class Ownership(Protocol):
    """The daemon's placement, as alerting reads it."""

    @property
    def clustered(self) -> bool: ...

    @property
    def me(self) -> str: ...

    def owns(self, integration: str) -> bool: ...

    @property
    def degraded(self) -> bool:
        """Redis unreachable: the view is frozen, results cannot travel to their owner."""
        ...

    def probes(self, check_id: str) -> bool:
        """Whether this replica runs the check ``integration/check``."""
        ...

    def owner_saw_failing(self, check_id: str) -> bool:
        """The last result of this check that reached its integration's owner from here was a failure."""
        ...

    def hold_results(self, integrations: frozenset[str]) -> None:
        """Keep the results of these integrations' checks here (the outage voice has not handed over yet)."""
        ...


def integration_of(alert_key: str) -> str:
    """The integration an alert key is about (keys are ``integration/alert/target/severity``)."""
    return alert_key.split("/", 1)[0]


class Voice:
    def __init__(self, ownership: Ownership | None) -> None:
        self.ownership = ownership if ownership is not None and ownership.clustered else None
        self.monitor = MONITOR if self.ownership is None else f"{MONITOR}@{self.ownership.me}"
        self.outage: set[str] = set()  # alert keys of others' integrations spoken for in an outage
        self.outage_integrations: set[str] = set()  # the integrations of those alerts
        self.outage_groups: set[str] = set()  # the notification groups of those alerts

    def speak_in_outage(self, key: str) -> None:
        """Start speaking for an alert of an integration owned elsewhere (Redis is unreachable)."""
        self.outage.add(key)
        self.outage_integrations.add(integration_of(key))

    def outage_over(self) -> None:
        """What the outage voice said was handed to the owners: it speaks for nothing any more."""
        self.outage.clear()
        self.outage_integrations.clear()
        self.outage_groups.clear()

    @property
    def in_outage(self) -> bool:
        """Redis is unreachable and others own some of what this replica probes."""
        return self.ownership is not None and self.ownership.degraded

    def may_take_in_outage(self, integration: str, check: str | None) -> bool:
        """Whether an alert about ``check`` of an integration owned elsewhere may start speaking here now."""
        if self.ownership is None or not self.in_outage or check is None:
            return False
        check_id = f"{integration}/{check}"
        return self.ownership.probes(check_id) and not self.ownership.owner_saw_failing(check_id)

    @property
    def shared(self) -> bool:
        """Several replicas: some alerts in the store are somebody else's."""
        return self.ownership is not None

    def integration(self, integration: str) -> bool:
        if self.ownership is None or integration == self.monitor:
            return True
        if is_monitor(integration):
            return False  # another replica's own health
        return self.ownership.owns(integration)

    def alert(self, key: str) -> bool:
        return self.ownership is None or self.integration(integration_of(key)) or key in self.outage

    def group(self, group_key: str, group_by: Sequence[str], any_integration: str | None) -> bool:
        """A notification group: the owner of its integration speaks for it; a group that spans
        integrations (``group_by`` without ``integration``) has one owner for all of them."""
        if self.ownership is None or group_key in self.outage_groups:
            return True
        if "integration" in group_by:
            parts = group_key.split("|")
            index = list(group_by).index("integration")
            return index < len(parts) and self.integration(parts[index])
        return any_integration is not None and self.integration(any_integration)
