"""An IANA time zone name in config (maintenance windows, webhook schedules), checked at load time."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Any


def _known_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (expected an IANA name such as Europe/Berlin)") from None
    return value


class _TimeZoneSchema:
    """Pydantic hook for ``TimeZoneName`` (imported only when pydantic builds a model)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(_known_zone, core_schema.str_schema())


TimeZoneName = Annotated[str, _TimeZoneSchema]
