"""Durations (integration_kit/durations.py): finite and between 0s and 365d, or a ValueError naming what
was expected; never another exception, never inf/NaN (which used to crash the scheduler or stall a check)."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from integration_kit.durations import MAX_DURATION, format_duration, parse_duration

values = st.one_of(
    st.floats(), st.integers(), st.booleans(), st.none(), st.text(max_size=30),
    st.from_regex(r"\A\d{1,30}(\.\d{1,5})?(ms|s|m|h|d)\Z"), st.lists(st.integers(), max_size=2),
)


@given(value=values)
@example(value=float("inf"))
@example(value=-0.0)  # formatted "-0s" once, which did not parse back
@example(value=float("nan"))
@example(value=10**400)
@example(value="99999999999999999999d")
def test_any_value_is_a_bounded_duration_or_a_value_error(value: object) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        assert str(exc).startswith("expected a duration")
    else:
        assert math.isfinite(seconds) and 0 <= seconds <= MAX_DURATION
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("inf"), "expected a duration between 0s and 365d, got inf"),
        (float("nan"), "expected a duration between 0s and 365d, got nan"),
        (1e308, "expected a duration between 0s and 365d, got 1e+308"),
        ("4000000d", "expected a duration between 0s and 365d, got '4000000d'"),
        (-1, "expected a duration between 0s and 365d, got -1"),
        (10**400, "expected a duration between 0s and 365d, got a number of more than 30 digits"),
        ("soon", "expected a duration like 500ms, 30s, 5m or 4h, got 'soon'"),
    ],
)
def test_out_of_range_durations_name_the_range(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace("+", r"\+") + "$"):
        parse_duration(value)


def test_the_range_ends_are_accepted() -> None:
    assert parse_duration("365d") == MAX_DURATION and parse_duration(0) == 0.0


def test_a_number_of_seconds_may_be_text_as_an_environment_variable_gives_it() -> None:
    assert (parse_duration("90"), parse_duration("1.5"), parse_duration(" 30 ")) == (90.0, 1.5, 30.0)
    with pytest.raises(ValueError, match=r"^expected a duration between 0s and 365d, got '31536001'$"):
        parse_duration("31536001")
