"""``LastMade``: per key, the last value made and what it was made of, to give the same value again while
its inputs are the same.

A full pass judges a firing alert the same way pass after pass: its condition, content, what a
notification tells of it and its stored text come out equal each time, and making them anew was most of
what the alert cost a pass. Each is kept where it is made, in a ``LastMade`` of the object that makes it
(an engine, its stepper, its flusher, its store): two engines in one process share nothing.

Inputs are compared with ``==``, the very object held last time (or, in a tuple, an element that is) taken
as equal without asking it further: what makes a hit cheap, most inputs being the same objects as last time
(a frozen dataclass's ``==`` builds a tuple of its fields on each side). An object equal to the last one
gives the value made from the last one: inputs must hold everything the value is made of. A value made of
one object as it is gives ``identity(obj)`` as its inputs (an alert's stored text keeps the order of its
mappings' keys, which ``==`` does not see). Bounded: a memo that reaches ``limit`` keys is emptied before it
takes another (its owner forgets keys that are gone with ``keep_only``, so that happens only when keys leak
or at a scale beyond the limit, where each pass makes things anew as it did without a memo).
"""

from __future__ import annotations

from collections.abc import Container, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

LIMIT = 16_384  # keys; a memo holds one per alert known (a firing one, mostly)


def identity(value: object) -> tuple[int, object]:
    """Inputs equal only to ``value`` itself, told apart without asking its ``==`` (what a new content of an
    alert would cost each memo that holds its last one): its id first, then the object (held by the memo,
    so its id is not another object's while it is kept)."""
    return (id(value), value)


class LastMade(Generic[K, V]):
    __slots__ = ("_limit", "_made")

    def __init__(self, limit: int = LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"LastMade limit: {limit!r}, expected at least 1")
        self._limit = limit
        self._made: dict[K, tuple[object, V]] = {}

    def get(self, key: K, inputs: object) -> V | None:
        """The value last made for ``key`` if it was made of inputs equal to ``inputs``, else None."""
        made = self._made.get(key)
        if made is not None and (made[0] is inputs or made[0] == inputs):
            return made[1]
        return None

    def put(self, key: K, inputs: object, value: V) -> V:
        """Remember ``value`` as made of ``inputs`` for ``key``; returns ``value``."""
        made = self._made
        if len(made) >= self._limit and key not in made:
            made.clear()
        made[key] = (inputs, value)
        return value

    def forget(self, key: K) -> None:
        self._made.pop(key, None)

    def keep_only(self, keys: Container[K]) -> None:
        """Forget every key not in ``keys`` (the alerts still known)."""
        made = self._made
        if any(key not in keys for key in made):
            self._made = {key: value for key, value in made.items() if key in keys}

    def __len__(self) -> int:
        return len(self._made)
