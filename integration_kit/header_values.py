"""Numbers in HTTP header values as vendors send them: the first item of a repeated field, and a time
that is a delay or an epoch. Shared by the ``Retry-After`` reader (``integration_kit.retry``) and the
rate-limit header parser (``integration_kit.ratelimit_headers``), so both read a value the same way."""

from __future__ import annotations

import math
import re

EPOCH_S = 1e9  # a time above this is an epoch in seconds (no one announces a delay of 31 years)
EPOCH_MS = 1e12  # … and above this an epoch in milliseconds
MAX_NUMBER = 1e15  # larger numbers are garbage, not quotas or times

_ITEM_END = re.compile(r"[,;]")


def first_number(text: str | None) -> float | None:
    """The number a header value starts with (``"60"``, ``"60, 60"`` from a repeated field, ``"2.0"``,
    ``"7;w=1"``); None when it is not a finite number of at most 1e15 in size."""
    if text is None:
        return None
    head = _ITEM_END.split(text, maxsplit=1)[0].strip()
    try:
        value = float(head)
    except ValueError:
        return None
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        return None
    return value


def seconds_until(value: float, *, now: float) -> float:
    """Seconds from ``now`` (epoch seconds) until a time given as a delay in seconds, or as an epoch in
    seconds (above 1e9) or in milliseconds (above 1e12); 0 when it has passed or the delay is negative."""
    if value > EPOCH_MS:
        value = value / 1000.0 - now
    elif value > EPOCH_S:
        value = value - now
    return max(0.0, value)
