"""Which replica does what: this replica's share of the checks and the integrations it owns.

Two units, two hashes over the same live members (rendezvous, ``monitor.cluster.rendezvous``):

* **checks, one by one**, decide who *probes*: the load spreads evenly whatever the integrations' sizes
  (bench/shard_sim.py: 1.02 × the mean for the busiest of 20 replicas, against ~4 × when whole
  integrations are placed).
* **integrations** decide who *owns*: the owner receives every result of the integration's checks (through
  Redis, ``monitor.cluster.streams``), exports its probe, quota and webhook series, reads its quota keys
  and webhook ledger, sets its probe back-off, and evaluates and sends its alerts. Per-integration state
  thus lives in one place. When ``alerting.group_by`` does not group by integration, one replica owns them
  all (a group then spans integrations, and a group must have one voice).

``Placement`` is what the daemon asks (``probes``, ``owns``, ``owner_of``, ``may_run``); ``Solo`` answers
for a daemon on its own (no cluster: everything here), ``Cluster`` for a member of one. Listeners
(``on_change``) hear of every change of share or ownership.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from monitor.cluster.rendezvous import owner, owners

if TYPE_CHECKING:
    from monitor.settings import Config

ALL_INTEGRATIONS = "*"  # the shard key of every integration when alerts are not grouped by integration
CHECKS_A_SLICE = 1_000  # checks placed between two pauses of ``Assignment.in_slices`` (~5 ms at three members)


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """What moved at one view change, seen from this replica."""

    checks_gained: Mapping[str, float] = field(default_factory=dict)  # check id → ran until (see view.ran_until)
    checks_lost: frozenset[str] = frozenset()
    integrations_gained: frozenset[str] = frozenset()
    integrations_lost: frozenset[str] = frozenset()
    # Gained from a replica whose lease ran out (crashed, or paused): integration → that replica. Its result
    # stream may still hold results of them that nobody counted (``ResultStreams.taken_over``).
    orphaned: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.checks_gained or self.checks_lost or self.integrations_gained or self.integrations_lost)


Listener = Callable[[Change], None]


class Placement(Protocol):
    """What the scheduler, the result router and the components ask."""

    @property
    def clustered(self) -> bool: ...

    @property
    def me(self) -> str: ...

    def probes(self, check_id: str) -> bool:
        """Whether this replica runs the check ``integration/check``."""
        ...

    def ran_until(self, check_id: str) -> float:
        """For a check this replica just took over: until when its previous prober ran it (epoch seconds)."""
        ...

    def owns(self, integration: str) -> bool:
        """Whether this replica owns the integration (its series, readers, back-off and alerts)."""
        ...

    def owner_of(self, integration: str) -> str | None: ...

    def may_run(self) -> bool:
        """False while this replica may have lost its membership without knowing it (it was paused)."""
        ...

    @property
    def degraded(self) -> bool:
        """Redis unreachable: the view is frozen (alerts/voice.py, the outage voice)."""
        ...

    def owner_saw_failing(self, check_id: str) -> bool:
        """The last result of this check that reached its integration's owner from here was a failure."""
        ...

    def hold_results(self, integrations: frozenset[str]) -> None:
        """Results of these integrations' checks are recorded here, not sent to their owner, until told
        otherwise: the alert engine speaks for some of their alerts until it handed them over."""
        ...

    def on_change(self, listener: Listener) -> None: ...


def check_id(integration: str, check: str) -> str:
    return f"{integration}/{check}"


def shard_key(integration: str, group_by: Iterable[str]) -> str:
    """The key an integration is owned by: itself, or one key for all when alerts group across them."""
    return integration if "integration" in group_by else ALL_INTEGRATIONS


def enabled_checks(config: Config) -> list[str]:
    return [check_id(i, c.name) for i, c in config.iter_checks() if c.enabled]


def fleet_fingerprint(config: Config, redact: Callable[[str], str]) -> str:
    """What decides placement, hashed: every enabled check (its whole config, secrets masked first by
    ``redact``), the jitter and the alert grouping. Replicas with the same fingerprint share work."""
    checks = sorted(
        (check_id(i, c.name), c.model_dump(mode="json")) for i, c in config.iter_checks() if c.enabled
    )
    text = json.dumps([checks, config.monitor.jitter, list(config.alerting.group_by)], sort_keys=True, default=str)
    return hashlib.blake2b(redact(text).encode(), digest_size=8).hexdigest()


class Solo:
    """A daemon on its own: it probes and owns everything, always."""

    clustered = False
    degraded = False

    def __init__(self, me: str = "") -> None:
        self._me = me

    @property
    def me(self) -> str:
        return self._me

    def probes(self, check_id: str) -> bool:
        return True

    def ran_until(self, check_id: str) -> float:
        return float("-inf")

    def owns(self, integration: str) -> bool:
        return True

    def owner_of(self, integration: str) -> str | None:
        return self._me

    def may_run(self) -> bool:
        return True

    def owner_saw_failing(self, check_id: str) -> bool:
        return False  # every result is recorded here

    def hold_results(self, integrations: frozenset[str]) -> None:
        return None  # every result is recorded here

    def on_change(self, listener: Listener) -> None:
        return None  # nothing ever moves


@dataclass(frozen=True, slots=True)
class Assignment:
    """The whole placement for one member list: pure, recomputed at every view change."""

    members: tuple[str, ...]
    share: frozenset[str]  # check ids this replica probes
    check_owner: Mapping[str, str]  # check id → prober (all checks)
    integration_owner: Mapping[str, str]  # integration → owner (all integrations)

    @classmethod
    def compute(cls, config: Config, members: tuple[str, ...], me: str) -> Assignment:
        """In one go (``in_slices`` drained)."""
        steps = cls.in_slices(config, members, me)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    @classmethod
    def in_slices(cls, config: Config, members: tuple[str, ...], me: str) -> Generator[None, None, Assignment]:
        """The same placement, worked out with a pause (a yield) every CHECKS_A_SLICE checks: at 50,000 checks
        and three members the hashing alone holds a loop for ~0.1 s (bench/view_change.py)."""
        group_by = config.alerting.group_by
        if not members:
            return cls(members, frozenset(), {}, {})
        checks: dict[str, str] = {}
        share: set[str] = set()
        some: list[str] = []

        def place() -> None:  # (the config's checks are read, and the share gathered, a slice at a time too)
            found = owners(some, members)
            checks.update(found)
            share.update(cid for cid, who in found.items() if who == me)
            some.clear()

        for integration, check in config.iter_checks():
            if check.enabled:
                some.append(check_id(integration, check.name))
                if len(some) == CHECKS_A_SLICE:
                    place()
                    yield
        place()
        shards = {i: shard_key(i, group_by) for i in config.integrations}
        by_shard = {key: owner(key, members) or "" for key in set(shards.values())}
        return cls(
            members=members,
            share=frozenset(share),
            check_owner=checks,
            integration_owner={i: by_shard[key] for i, key in shards.items()},
        )

    def owned(self, me: str) -> frozenset[str]:
        return frozenset(i for i, who in self.integration_owner.items() if who == me)

    def status(self, me: str) -> dict[str, Any]:
        return {
            "members": list(self.members),
            "owned_checks": len(self.share),
            "owned_integrations": sorted(self.owned(me)),
        }
