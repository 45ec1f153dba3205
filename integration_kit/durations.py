"""Durations in config: ``500ms``, ``30s``, ``5m``, ``4h``, ``1d`` (or a bare number of seconds), from 0 to
365d; anything else (NaN, infinities, negative, longer) is a ValueError naming what was expected."""

from __future__ import annotations

import re
from typing import Annotated, Any

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SECONDS = re.compile(r"\d+(?:\.\d+)?")  # a number of seconds written as text: what ``${VAR}`` gives
MAX_DURATION = 365 * 86400.0
"""The longest duration anything accepts (365d): every timer, trigger and timestamp stays finite."""
_FORMAT = "expected a duration like 500ms, 30s, 5m or 4h"


def parse_duration(value: Any) -> float:
    """Return seconds, from 0 to ``MAX_DURATION``. Accepts numbers (seconds) and strings like ``1m30s``;
    raises ValueError naming what was expected otherwise (NaN and infinities included)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{_FORMAT}, got {_shown(value)}")
    seconds = _parse_text(value) if isinstance(value, str) else value
    # Compared before any float(): a huge int would overflow it; NaN fails every comparison.
    if not 0 <= seconds <= MAX_DURATION:
        raise ValueError(f"expected a duration between 0s and {format_duration(MAX_DURATION)}, got {_shown(value)}")
    return float(seconds)


def _parse_text(value: str) -> float:
    text = value.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{_FORMAT}, got {_shown(value)}")
    return total


def _shown(value: Any) -> str:
    """The value as the user wrote it (YAML or JSON: ``null``, ``true``, a list), not as Python shows it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict):
        return "a list" if not isinstance(value, dict) else "a mapping"
    if isinstance(value, int) and not -(10**30) < value < 10**30:
        return "a number of more than 30 digits"  # (repr of a huge int can even fail)
    return repr(value)


def format_duration(seconds: float) -> str:
    """The shortest way to write a duration that ``parse_duration`` reads back (to the microsecond)."""
    if seconds == 0:
        return "0s"  # -0.0 too: "-0s" would not parse back
    if seconds < 1:
        return f"{_decimal(seconds * 1000, 3)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{_decimal(seconds / size, 6)}{unit}"
    return f"{_decimal(seconds, 6)}s"


def _decimal(number: float, places: int) -> str:
    """Plain decimal, never an exponent (``1e-05`` or ``1.2e+06`` would not parse back)."""
    return f"{number:.{places}f}".rstrip("0").rstrip(".") or "0"


class _DurationSchema:
    """Pydantic hook for ``Duration``: pydantic asks for it only when it builds a model, so this module
    needs no pydantic to import (the kit runs in services that do not have it)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(
            parse_duration,
            handler(source),  # the float schema with the field's constraints (gt=0…): a bare one ignored them
            serialization=core_schema.plain_serializer_function_ser_schema(
                format_duration, return_schema=core_schema.str_schema(), when_used="json"
            ),
        )


Duration = Annotated[float, _DurationSchema]
"""A config field holding a duration; the Python value is seconds as a float."""
