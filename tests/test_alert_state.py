"""The alert state machine (alerts/state.py): a transition table plus hypothesis properties over random
condition sequences — never firing before `for`, never resolving inside keep_firing_for, unknown holds,
flapping told once per episode."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.config import FlappingConfig
from alerts.model import AlertStatus as S
from alerts.state import AlertState, Event, forgettable, step

FLAP = FlappingConfig(window=3600, max_transitions=6, settle_transitions=2)
KEY = "acme/error_rate/api/critical"


def st_(status: S, **kw: float | None) -> AlertState:
    return AlertState(key=KEY, status=status, **kw)  # type: ignore[arg-type]


# (state before, condition, now, for, keep_firing_for) → (status after, events)
TABLE = [
    # inactive
    (st_(S.INACTIVE), None, 100, 0, 0, S.INACTIVE, ()),
    (st_(S.INACTIVE), False, 100, 0, 0, S.INACTIVE, ()),
    (st_(S.INACTIVE), True, 100, 0, 0, S.FIRING, (Event.FIRED,)),
    (st_(S.INACTIVE), True, 100, 60, 0, S.PENDING, ()),
    # pending
    (st_(S.PENDING, pending_since=100, last_true=100), True, 159, 60, 0, S.PENDING, ()),
    (st_(S.PENDING, pending_since=100, last_true=100), True, 160, 60, 0, S.FIRING, (Event.FIRED,)),
    (st_(S.PENDING, pending_since=100, last_true=100), False, 130, 60, 0, S.INACTIVE, ()),
    (st_(S.PENDING, pending_since=100, last_true=100), None, 130, 60, 0, S.PENDING, ()),
    # firing
    (st_(S.FIRING, firing_since=100, last_true=100), True, 200, 0, 0, S.FIRING, ()),
    (st_(S.FIRING, firing_since=100, last_true=100), None, 9999, 0, 0, S.FIRING, ()),
    (st_(S.FIRING, firing_since=100, last_true=100), False, 115, 0, 0, S.RESOLVED, (Event.RESOLVED,)),
    (st_(S.FIRING, firing_since=100, last_true=100), False, 159, 0, 60, S.FIRING, ()),
    (st_(S.FIRING, firing_since=100, last_true=100), False, 160, 0, 60, S.RESOLVED, (Event.RESOLVED,)),
    # resolved
    (st_(S.RESOLVED, resolved_at=100), False, 200, 0, 0, S.RESOLVED, ()),
    (st_(S.RESOLVED, resolved_at=100), None, 200, 0, 0, S.RESOLVED, ()),
    (st_(S.RESOLVED, resolved_at=100), True, 200, 0, 0, S.FIRING, (Event.FIRED,)),
    (st_(S.RESOLVED, resolved_at=100), True, 200, 30, 0, S.PENDING, ()),
]


@pytest.mark.parametrize(("before", "cond", "now", "for_s", "keep", "status", "events"), TABLE)
def test_transition_table(before: AlertState, cond: bool | None, now: float, for_s: float, keep: float,
                          status: S, events: tuple[Event, ...]) -> None:
    after, got = step(before, cond, now, for_seconds=for_s, keep_firing_for=keep, flapping=FLAP)
    assert after.status is status
    assert got == events


def test_pending_resets_when_the_condition_drops() -> None:
    s = AlertState(key=KEY)
    s, _ = step(s, True, 0, for_seconds=60, keep_firing_for=0, flapping=FLAP)
    s, _ = step(s, False, 30, for_seconds=60, keep_firing_for=0, flapping=FLAP)
    s, _ = step(s, True, 45, for_seconds=60, keep_firing_for=0, flapping=FLAP)
    s, ev = step(s, True, 90, for_seconds=60, keep_firing_for=0, flapping=FLAP)
    assert s.status is S.PENDING and ev == ()  # 45 s since it became true again, not 90
    s, ev = step(s, True, 105, for_seconds=60, keep_firing_for=0, flapping=FLAP)
    assert s.status is S.FIRING and ev == (Event.FIRED,) and s.firing_since == 105


def test_keep_firing_for_counts_from_the_last_true_evaluation() -> None:
    s = AlertState(key=KEY)
    s, _ = step(s, True, 0, for_seconds=0, keep_firing_for=60, flapping=FLAP)
    s, _ = step(s, False, 30, for_seconds=0, keep_firing_for=60, flapping=FLAP)
    s, _ = step(s, True, 50, for_seconds=0, keep_firing_for=60, flapping=FLAP)  # blip back: still firing
    s, ev = step(s, False, 100, for_seconds=0, keep_firing_for=60, flapping=FLAP)
    assert s.status is S.FIRING and ev == ()
    s, ev = step(s, False, 110, for_seconds=0, keep_firing_for=60, flapping=FLAP)
    assert s.status is S.RESOLVED and ev == (Event.RESOLVED,) and s.resolved_at == 110
    assert s.transitions == (0, 110)


def test_flapping_is_told_once_then_settles_once() -> None:
    s, told = AlertState(key=KEY), list[Event]()
    now = 0.0
    for i in range(40):  # toggles every minute for 40 minutes
        s, ev = step(s, i % 2 == 0, now, for_seconds=0, keep_firing_for=0, flapping=FLAP)
        told.extend(ev)
        now += 60
    assert told.count(Event.FLAPPING) == 1
    assert s.flapping
    # Quiet for an hour: transitions age out of the window → settled, once.
    for _ in range(70):
        s, ev = step(s, False, now, for_seconds=0, keep_firing_for=0, flapping=FLAP)
        told.extend(ev)
        now += 60
    assert told.count(Event.SETTLED) == 1 and not s.flapping
    assert forgettable(s)


def test_forgettable_only_when_nothing_is_left() -> None:
    assert forgettable(AlertState(key=KEY))
    assert not forgettable(st_(S.FIRING, firing_since=1, last_true=1))
    assert not forgettable(st_(S.PENDING, pending_since=1, last_true=1))
    assert not forgettable(replace(st_(S.RESOLVED, resolved_at=5), transitions=(1.0, 5.0)))


conditions = st.lists(st.one_of(st.none(), st.booleans()), min_size=1, max_size=80)
gaps = st.lists(st.floats(min_value=1, max_value=600), min_size=80, max_size=80)


@settings(max_examples=300, deadline=None)
@given(conds=conditions, gaps=gaps, for_s=st.sampled_from([0.0, 30.0, 120.0]),
       keep=st.sampled_from([0.0, 60.0, 300.0]))
def test_properties(conds: list[bool | None], gaps: list[float], for_s: float, keep: float) -> None:
    s, now = AlertState(key=KEY), 1000.0
    true_since: float | None = None  # start of the current run of True (None breaks nothing, False does)
    last_true: float | None = None
    for cond, gap in zip(conds, gaps, strict=False):
        before = s
        if cond is True:
            true_since = now if true_since is None else true_since
            last_true = now
        elif cond is False:
            true_since = None
        s, events = step(s, cond, now, for_seconds=for_s, keep_firing_for=keep, flapping=FLAP)

        if Event.FIRED in events:
            # never firing without having been pending (true, uninterrupted by False) for ≥ `for`
            assert cond is True and before.status in (S.INACTIVE, S.RESOLVED, S.PENDING)
            assert true_since is not None and now - true_since >= for_s
        if Event.RESOLVED in events:
            # only on a False condition, and only after keep_firing_for since the last true evaluation
            assert cond is False and before.status is S.FIRING
            assert last_true is not None and now - last_true >= keep
        if cond is None:
            assert s.status is before.status  # unknown holds
        assert (Event.FIRED in events) == (before.status is not S.FIRING and s.status is S.FIRING)
        assert (Event.RESOLVED in events) == (before.status is S.FIRING and s.status is S.RESOLVED)
        assert (Event.FLAPPING in events) == (not before.flapping and s.flapping)
        assert all(t > now - FLAP.window for t in s.transitions)
        now += gap


@settings(max_examples=200, deadline=None)
@given(pattern=st.lists(st.booleans(), min_size=10, max_size=200))
def test_flapping_messages_alternate(pattern: list[bool]) -> None:
    """FLAPPING and SETTLED alternate, starting with FLAPPING: each episode is told once."""
    s, seq, now = AlertState(key=KEY), list[Event](), 0.0
    for cond in pattern:
        s, events = step(s, cond, now, for_seconds=0, keep_firing_for=0, flapping=FLAP)
        seq.extend(e for e in events if e in (Event.FLAPPING, Event.SETTLED))
        now += 30
    assert all(e is (Event.FLAPPING if i % 2 == 0 else Event.SETTLED) for i, e in enumerate(seq))
