"""An IANA time zone name in config (maintenance windows, webhook schedules), checked at load time."""

from __future__ import annotations

import zoneinfo
from typing import Annotated

from pydantic import AfterValidator


def _known_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (expected an IANA name such as Europe/Berlin)") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]
