"""Waiting in the tests: for a condition, never for a guessed time.

Every wait polls a condition until it holds. Its limit only turns a hang into a failure — it is no speed
claim, so it is generous for a loaded machine — and the failure says what was awaited and the last value
seen, so a wait that fails reads as a bug report rather than "condition not met"."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")

# A look at a server over HTTP that finds it not answering yet (starting, paused, restarting), or cut off
# half-way through its document: not yet, rather than a failure.
NO_ANSWER = (aiohttp.ClientError, OSError, json.JSONDecodeError)

WITHIN = 30.0  # seconds before a wait fails: what a hang needs to show, many times what any wait takes
EVERY = 0.05  # seconds between two looks: short beside any wait, long enough not to load the machine
_NOTHING = object()


class _Wait:
    """One wait's deadline, the last value (or error) it saw, and the failure that names both."""

    def __init__(self, what: str, within: float, holds: Callable[[Any], object]) -> None:
        self.what, self.within, self.holds = what, within, holds
        self.deadline = time.monotonic() + within
        self.seen: object = _NOTHING
        self.error: BaseException | None = None

    def met(self, value: object) -> bool:
        self.seen, self.error = value, None
        return bool(self.holds(value))

    def failure(self) -> AssertionError:
        seen = "nothing (no look completed)" if self.seen is _NOTHING else _shown(self.seen)
        error = "" if self.error is None else f" (the last look raised {self.error!r})"
        return AssertionError(f"not within {self.within:g} s: {self.what}; last seen: {seen}{error}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 1000 else text[:1000] + f"… ({len(text)} characters)"


async def until(
    look: Callable[[], T | Awaitable[T]], what: str, *, holds: Callable[[T], object] = bool,
    within: float = WITHIN, every: float = EVERY, ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Look (``look()``, plain or async) until ``holds(value)`` — by default, until the value is true — and
    return that value. ``what`` names what is awaited, for the failure after ``within`` seconds. A look that
    raises one of ``ignoring`` (a server not answering yet) counts as not yet; any other error, an
    AssertionError included (a process that exited), ends the wait at once."""
    wait = _Wait(what, within, holds)
    while True:
        try:
            value = look()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as error:
            wait.error = error
        else:
            if wait.met(value):
                return value  # type: ignore[return-value]
        if time.monotonic() > wait.deadline:
            raise wait.failure()
        await asyncio.sleep(every)


def until_blocking(
    look: Callable[[], T], what: str, *, holds: Callable[[T], object] = bool, within: float = WITHIN,
    every: float = 0.25, ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """``until`` for a test without an event loop (it sleeps the thread between looks)."""
    wait = _Wait(what, within, holds)
    while True:
        try:
            value = look()
        except ignoring as error:
            wait.error = error
        else:
            if wait.met(value):
                return value
        if time.monotonic() > wait.deadline:
            raise wait.failure()
        time.sleep(every)
