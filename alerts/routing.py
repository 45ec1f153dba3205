"""Which alerts go out, in which group, at one evaluation (pure).

An alert with content is a candidate for its group while it fires or flaps, and once more when it
resolved after it was sent (``send_resolved``; otherwise the group's log forgets it). It is held back
while muted (a silence or a maintenance window: ``muted`` says why) or inhibited (a warning while the
critical of the same alert fires). One that was told and resolves while muted keeps its place in the log,
so its resolve goes out once the silence ends (its message does not stay red for ever); one that fired
and resolved while muted was never told, and no resolve of it is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from alerts.grouping import group_key
from alerts.memo import LastMade, identity
from alerts.model import Alert, AlertStatus, Severity
from alerts.state import AlertState, Event

TOLD = (Event.FIRED, Event.RESOLVED, Event.FLAPPING)  # the events a notification would have told


@dataclass(frozen=True, slots=True)
class Selection:
    candidates: dict[str, list[Alert]] = field(default_factory=dict)  # group key → alerts to tell
    forget: dict[str, set[str]] = field(default_factory=dict)  # group key → alert keys to drop from its log
    suppressed: list[tuple[str, str]] = field(default_factory=list)  # (alert key, why) of news held back
    # (alert key, why) of alerts held back while they fire with no news: their repeats are held back too
    held_firing: list[tuple[str, str]] = field(default_factory=list)


def outgoing(state: AlertState) -> Alert:
    """The alert as a notification tells it now (firing, or resolved; flapping counts as firing)."""
    assert state.alert is not None
    firing = state.status is AlertStatus.FIRING or state.flapping
    return replace(
        state.alert,
        status=AlertStatus.FIRING if firing else AlertStatus.RESOLVED,
        started_at=state.firing_since or state.alert.started_at,
        resolved_at=None if firing else state.resolved_at,
        flapping=state.flapping,
    )


class Outgoing:
    """``outgoing``, the same object again for a state whose alert content, status, times and flapping are
    what they were (a firing alert's, pass after pass: copying its content was a fifth of what an alert
    that fires costs a full pass). ``keep_only`` forgets the alerts no longer known."""

    __slots__ = ("_made",)

    def __init__(self) -> None:
        self._made: LastMade[str, Alert] = LastMade()

    def __call__(self, state: AlertState) -> Alert:
        inputs = (identity(state.alert), state.status, state.firing_since, state.resolved_at, state.flapping)
        made = self._made.get(state.key, inputs)
        if made is not None:
            return made
        return self._made.put(state.key, inputs, outgoing(state))

    def keep_only(self, keys: Collection[str]) -> None:
        self._made.keep_only(keys)


def inhibited_by(states: Mapping[str, AlertState]) -> dict[str, str]:
    """Firing alerts held back by inhibition → the key of the alert inhibiting each: a warning (any severity
    below critical) while the critical of the same alert and target fires. Still firing (its state, the
    ``integration_alert_firing`` gauge), only not told; ``integration_alert_inhibited`` and ``/api/status``
    show it, so dashboards and rules can agree with what was sent."""
    critical_firing = {
        k.rsplit("/", 1)[0] for k, s in states.items()
        if s.status is AlertStatus.FIRING and s.alert is not None and s.alert.severity is Severity.CRITICAL
    }
    out = {}
    for key, state in states.items():
        base = key.rsplit("/", 1)[0]
        if (state.status is AlertStatus.FIRING and state.alert is not None
                and state.alert.severity is not Severity.CRITICAL and base in critical_firing):
            out[key] = f"{base}/{Severity.CRITICAL}"
    return out


def select(
    states: Mapping[str, AlertState],
    told: Mapping[str, Collection[str]],
    events: Mapping[str, tuple[Event, ...]],
    *,
    group_by: Sequence[str],
    send_resolved: bool,
    muted: Callable[[Alert], str | None],
    tell: Callable[[AlertState], Alert] = outgoing,
) -> Selection:
    """``tell``: ``outgoing``, or an ``Outgoing`` that remembers what it made."""
    inhibitions = inhibited_by(states)
    out = Selection()
    for key, state in states.items():
        if state.alert is None:
            continue
        alert = tell(state)
        gkey = group_key(alert, group_by)
        was_sent = key in told.get(gkey, ())
        why_muted = muted(alert)
        inhibited = key in inhibitions
        if why_muted is not None or inhibited:
            why = why_muted or "inhibited by critical"
            if any(e in TOLD for e in events.get(key, ())):
                out.suppressed.append((key, why))
            elif state.flapping or state.status is AlertStatus.FIRING:
                out.held_firing.append((key, why))
            continue  # held back: the resolve of one told before goes out once nothing mutes it
        if state.flapping or state.status is AlertStatus.FIRING:
            out.candidates.setdefault(gkey, []).append(alert)
        elif was_sent:
            if send_resolved:
                out.candidates.setdefault(gkey, []).append(alert)
            else:
                out.forget.setdefault(gkey, set()).add(key)
    return out
