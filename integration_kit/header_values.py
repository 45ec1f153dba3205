"""Numbers in HTTP header values as vendors send them: the first item of a repeated field, and a time
that is a delay or an epoch. Shared by the ``Retry-After`` reader (``integration_kit.retry``) and the
rate-limit header parser (``integration_kit.ratelimit_headers``), so both read a value the same way; and
whether a response's rate-limit fields say the limit is used up (``used_up_limit``: a 403 that is a rate
limit, and how long it asks us to wait)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

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


# The "remaining" fields of the rate-limit header families, each with the fields of its family that say
# when the limit resets (a delay, or an epoch; the first present is read).
_REMAINING_AND_RESET = (
    ("x-ratelimit-remaining", ("x-ratelimit-reset-after", "x-ratelimit-reset")),  # GitHub, Discord
    ("x-rate-limit-remaining", ("x-rate-limit-reset",)),  # X / Twitter
    ("ratelimit-remaining", ("ratelimit-reset",)),  # the IETF draft-06 form
)


def used_up_limit(headers: Mapping[str, str]) -> tuple[str, float | None] | None:
    """``(field, reset)`` when ``headers`` (case-insensitive, as aiohttp's and requests' are) announce a
    rate limit with nothing remaining: the ``…-remaining`` field that reads 0, and its family's reset value
    as sent (a delay or an epoch; ``seconds_until`` reads it), None when the family gives none. None when
    no limit is announced as used up."""
    for remaining, resets in _REMAINING_AND_RESET:
        left = first_number(headers.get(remaining))
        if left is not None and left <= 0:
            reset = next((n for f in resets if (n := first_number(headers.get(f))) is not None), None)
            return remaining, reset
    return None
