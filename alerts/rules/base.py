"""What every rule shares: its input (``RuleInput``), its verdict (``Condition``) and alert identity.

A rule is a pure function ``evaluate(RuleInput) -> Iterable[Condition]`` (``RuleFn``). It reports every
alert instance it can judge: ``active=True`` or ``active=False`` (``active=False`` only where the input
``wants_clear``). An instance it cannot judge (too few samples, no data yet — e.g. just after
a restart) is left out, and the state machine keeps that alert as it is instead of resolving it for lack
of data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alerts.model import Severity

if TYPE_CHECKING:
    from alerts.inputs import CheckView, IntegrationView
    from alerts.memo import LastMade
    from alerts.stats import CheckStats, QuotaReading, Stats
    from alerts.traffic_stats import TrafficStats


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    """One rule's verdict on one alert instance at one evaluation."""

    integration: str
    alert: str  # rule name
    severity: Severity
    active: bool
    target: str | None = None  # the check or quota the instance is about
    check: str | None = None
    quota: str | None = None
    summary: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
    error_classes: Mapping[str, int] = field(default_factory=dict)
    for_seconds: float = 0.0
    keep_firing_for: float = 0.0

    @property
    def key(self) -> str:
        return alert_key(self.integration, self.alert, self.target, self.severity)


def alert_key(integration: str, alert: str, target: str | None, severity: Severity | str) -> str:
    """Stable identity of an alert instance across restarts (also the Redis field name)."""
    return "/".join((integration, alert, key_part(target), str(severity)))


def key_part(target: str | None) -> str:
    """How an alert key spells its target."""
    return target or "-"


def known_targets(keys: Iterable[str]) -> dict[str, frozenset[str] | None]:
    """Per integration, the targets of these alert keys as they spell them (None: a key of another shape,
    whose target cannot be told)."""
    known: dict[str, set[str] | None] = {}
    for key in keys:
        parts = key.split("/")
        targets = known.setdefault(parts[0], set())
        if len(parts) < 4:
            known[parts[0]] = None
        elif targets is not None:
            targets.add("/".join(parts[2:-1]))
    return {integration: None if targets is None else frozenset(targets) for integration, targets in known.items()}


def key_target(key: str) -> str | None:
    """The target part of an ``alert_key`` (None for "-" or a key of another shape, such as a test alert's)."""
    parts = key.split("/")
    if len(parts) < 4:
        return None
    target = "/".join(parts[2:-1])
    return None if target == "-" else target


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleInput:
    integration: str
    config: IntegrationView
    stats: Stats
    quotas: Mapping[str, QuotaReading]  # this integration's quotas by name
    now: float
    active: frozenset[str]  # keys of this integration's alerts now pending or firing (for hysteresis)
    facts: Mapping[str, float] = field(default_factory=dict)  # fed by other components (set_fact)
    traffic: TrafficStats | None = None  # the integration's real-traffic calls, if its services record them
    # The checks to judge, when not all of them: an early evaluation judges only those with new results
    # or a deadline due (alerts/concerns.py); rules of the integration as a whole run either way.
    judged: Sequence[CheckView] | None = None
    # The targets of this integration's alerts the engine knows (pending, firing or remembered as resolved),
    # as their keys spell them (``key_part``); None: unknown. A verdict of "not active" on any other target
    # changes nothing (alerts/stepping.py drops it), and making one cost more than judging a healthy check:
    # rules yield those only where ``wants_clear``.
    known_targets: frozenset[str] | None = None
    # The error-rate rule's conditions of tiers that fired at earlier passes, by (integration, target,
    # severity), with what each was made of: the same condition again while that is the same (the engine's
    # own; None: nothing kept).
    fired: LastMade[tuple[str, str, Severity], Condition] | None = None
    # Each judged check with its statistics (a check without any left out), looked up once for all the
    # rules (the engine's; None: looked up from ``stats`` when asked): each rule looking up every check's
    # was about a tenth of a full pass.
    checked: Sequence[tuple[CheckView, CheckStats]] | None = None

    @property
    def checks(self) -> Sequence[CheckView]:
        """The checks whose alerts this evaluation judges."""
        return self.config.checks if self.judged is None else self.judged

    def checks_with_stats(self) -> Sequence[tuple[CheckView, CheckStats]]:
        """The judged checks with their statistics (``checked``), in their order; a check without any is
        left out (no run recorded: no rule can judge it)."""
        if self.checked is not None:
            return self.checked
        return judged_with_stats(self.stats, self.integration, self.checks)

    def wants_clear(self, target: str | None) -> bool:
        """Whether a verdict of "not active" on ``target`` is wanted (see ``known_targets``)."""
        return self.known_targets is None or key_part(target) in self.known_targets

    def rule_config(self, name: str) -> Any:
        return getattr(self.config.alerts, name)


RuleFn = Callable[[RuleInput], Iterable[Condition]]


def judged_with_stats(stats: Stats, integration: str, checks: Iterable[CheckView]
                      ) -> list[tuple[CheckView, CheckStats]]:
    """``checks`` of ``integration`` with their statistics, those without any left out."""
    of = stats.checks.get
    return [(check, found) for check in checks if (found := of((integration, check.name))) is not None]
