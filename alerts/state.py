"""The alert state machine. Pure: no I/O, no clock — ``now`` is an argument.

    inactive ──true──► pending ──true for ≥ `for`──► firing ──false for ≥ keep_firing_for──► resolved
        ▲                 │                            ▲                                     │
        └─────false───────┘                            └──────────── true (for = 0) ─────────┘

A condition of ``None`` (the rule could not judge: too few samples) holds the state. Fire and resolve
transitions are remembered for ``flapping.window``; reaching ``max_transitions`` marks the alert flapping
(one FLAPPING event), and it settles (one SETTLED event) once the transitions in the window drop to
``settle_transitions`` — in between the engine sends nothing for it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from alerts.config import FlappingConfig
from alerts.model import Alert, AlertStatus


class Event(enum.StrEnum):
    FIRED = "fired"
    RESOLVED = "resolved"
    FLAPPING = "flapping"
    SETTLED = "settled"


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertState:
    key: str
    status: AlertStatus = AlertStatus.INACTIVE
    pending_since: float | None = None  # first evaluation of the current true streak
    firing_since: float | None = None
    last_true: float | None = None  # last evaluation the condition was true
    resolved_at: float | None = None
    transitions: tuple[float, ...] = ()  # times of fire/resolve transitions inside the flapping window
    flapping: bool = False
    alert: Alert | None = None  # content of the last true evaluation (kept to tell of the resolve)

    @property
    def active(self) -> bool:
        return self.status in (AlertStatus.PENDING, AlertStatus.FIRING)


def step(
    state: AlertState,
    active: bool | None,
    now: float,
    *,
    for_seconds: float,
    keep_firing_for: float,
    flapping: FlappingConfig,
    alert: Alert | None = None,
) -> tuple[AlertState, tuple[Event, ...]]:
    """Advance one evaluation. ``alert`` is the content to remember when the condition is true."""
    events: list[Event] = []
    s = state
    if active is True:
        s = replace(s, last_true=now, alert=alert if alert is not None else s.alert)
        if s.status in (AlertStatus.INACTIVE, AlertStatus.RESOLVED):
            s = replace(s, status=AlertStatus.PENDING, pending_since=now, resolved_at=None)
        if s.status is AlertStatus.PENDING and s.pending_since is not None and now - s.pending_since >= for_seconds:
            s = replace(s, status=AlertStatus.FIRING, firing_since=now, transitions=(*s.transitions, now))
            events.append(Event.FIRED)
    elif active is False:
        if s.status is AlertStatus.PENDING:
            s = replace(s, status=AlertStatus.INACTIVE, pending_since=None)
        elif s.status is AlertStatus.FIRING and (s.last_true is None or now - s.last_true >= keep_firing_for):
            s = replace(
                s, status=AlertStatus.RESOLVED, resolved_at=now, pending_since=None,
                transitions=(*s.transitions, now),
            )
            events.append(Event.RESOLVED)

    recent = tuple(t for t in s.transitions if t > now - flapping.window)
    if recent != s.transitions:
        s = replace(s, transitions=recent)
    if not s.flapping and len(recent) >= flapping.max_transitions:
        s = replace(s, flapping=True)
        events.append(Event.FLAPPING)
    elif s.flapping and len(recent) <= flapping.settle_transitions:
        s = replace(s, flapping=False)
        events.append(Event.SETTLED)
    return s, tuple(events)


def due_at(state: AlertState, active: bool | None, *, for_seconds: float, keep_firing_for: float) -> float | None:
    """When ``step`` would move ``state`` if the condition stays ``active``: a pending alert fires once ``for``
    has passed, a firing one whose condition is false resolves once ``keep_firing_for`` has. None: not
    while the condition stays. (The engine evaluates then rather than at the evaluation after.)"""
    if active is True and state.status is AlertStatus.PENDING and state.pending_since is not None:
        return state.pending_since + for_seconds
    if active is False and state.status is AlertStatus.FIRING and state.last_true is not None:
        return state.last_true + keep_firing_for
    return None


def forgettable(state: AlertState) -> bool:
    """Nothing left to remember: not active, not flapping, no transition in the flapping window."""
    return not state.active and not state.flapping and not state.transitions


def judged_until(state: AlertState) -> float | None:
    """The last evaluation ``state`` is known to come from: a run that started before it is no news to it.
    (Runs are timed by their prober's clock, evaluations by the judging replica's: replicas' clocks are
    taken to agree, as they must for the alert timings anyway.)"""
    return max((t for t in (state.pending_since, state.firing_since, state.last_true, state.resolved_at)
                if t is not None), default=None)
