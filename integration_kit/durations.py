"""Durations in config: ``500ms``, ``30s``, ``5m``, ``4h``, ``1d`` (or a bare number of seconds)."""

from __future__ import annotations

import re
from typing import Annotated, Any

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """Return seconds. Accepts numbers (seconds) and strings like ``1m30s``; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 500ms, 30s, 5m or 4h, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected a non-negative duration, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 500ms, 30s, 5m or 4h, got {value!r}")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"expected a duration like 500ms, 30s, 5m or 4h, got {value!r}")
    return total


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class _DurationSchema:
    """Pydantic hook for ``Duration``: pydantic asks for it only when it builds a model, so this module
    needs no pydantic to import (the kit runs in services that do not have it)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(
            parse_duration,
            core_schema.float_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                format_duration, return_schema=core_schema.str_schema(), when_used="json"
            ),
        )


Duration = Annotated[float, _DurationSchema]
"""A config field holding a duration; the Python value is seconds as a float."""
