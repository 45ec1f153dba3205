"""A parsed config moved away from the garbage its parse left: the daemon's RSS, not its live bytes.

Why: parsing a big config makes far more short-lived objects than the config keeps (YAML's node graph with
two marks a node, the plain tree, pydantic's inputs), and the objects the config keeps (names, URLs, the
models and their dicts) are allocated among them. Once the garbage is freed, Python's allocator can give
an arena (1 MiB) back to the system only when nothing in it is alive any more, and the config's objects,
a few in every arena, keep nearly all the arenas the parse used. At 10,000 checks ``parse_config`` took
RSS from 80 to 130 MB for about 9 MB of config (bench/README.md). A copy made after the parse, once the
original and its garbage are gone, lies in a compact run of memory: 130 -> 97 MB there.

The copy is pickle's: every object of the config, with its identity kept (the parts ``sharing.py`` made
one object stay one object), fields given (``model_fields_set``), private and cached attributes as they
are; nothing is validated again. A config pickle cannot copy (none is known: a check would have to cache
something unpicklable while it is validated) is kept as parsed.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def compacted(parse: Callable[[], T]) -> T:
    """What ``parse`` returns, copied into fresh memory after the original (and so everything the parse
    left only to it) is freed. ``parse`` is a callable, not a value, so that no caller keeps a reference
    to the original alive while the copy is made."""
    parsed = parse()
    try:
        image = pickle.dumps(parsed, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return parsed
    del parsed  # first: its memory is free again before the copy takes any, so the copy fills it densely
    copy: T = pickle.loads(image)
    return copy
