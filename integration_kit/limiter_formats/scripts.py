"""Server-side gathering: a Lua script runs a format's read commands for a batch of keys inside Redis and
returns only the replies the format's decoder needs, ``stride`` values per key.

A script gathers and never computes a reading: it sends back the same values the plain commands would
(a ZCOUNT and the oldest score, a GET and a PTTL, an HMGET) and the format's one decoder turns them into
a ``KeyReading`` whichever way they were fetched. Where the plain commands cost one command per key (a
list, a sorted set, a hash, a pair of keys), 10,000 keys are 20,000 commands in a pipeline; gathered,
they are 20 ``EVAL`` calls of ``SCRIPT_KEYS`` keys, each holding Redis a few milliseconds.

The values come back as one JSON array per call (Redis' built-in ``cjson``): a client parses one bulk
string instead of a RESP element per value, which is most of the cost of a large reply in redis-py.
Strings stay strings (a counter's value is passed on exactly as stored), nil is ``false`` and an error
(a key of another type) is ``{"err": …}``, turned back into what redis-py gives for each.

``EVAL`` (not ``EVALSHA``): the source is a few hundred bytes, Redis caches it by its SHA1, and a
restarted or flushed Redis needs no ``SCRIPT LOAD`` round trip. The scripts only read and use
``redis.pcall`` where a key of another type must come back as the error the plain command would give.
When Redis refuses ``EVAL`` (an ACL user without ``+eval``, scripting renamed away), the caller reads
with the plain commands instead (``script_refused``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoPermissionError, ResponseError

from integration_kit.limiter_formats.plans import (
    BatchPlan,
    Command,
    Outcome,
    by_value,
    check_reply,
    guarded,
    of_type,
    text,
    values_and_exists,
    wire,
)

SCRIPT_KEYS = 500  # keys per EVAL: bounds how long one script call holds Redis


@dataclass(frozen=True, slots=True)
class Gatherer:
    """A read-only Lua loop over ``KEYS`` that fills ``out`` with ``stride`` values per key, in key order
    (``false`` for nil); the call returns ``out`` as JSON."""

    body: str
    stride: int
    source: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", f"local out = {{}}\n{self.body.strip()}\nreturn cjson.encode(out)\n")

    def plan(
        self,
        keys: Sequence[str],
        read: Callable[[str, tuple[Any, ...]], Outcome],
        *,
        args: Callable[[Sequence[str]], Sequence[Any]] = lambda chunk: (),
        names: Callable[[str], Sequence[str]] = lambda key: (key,),
    ) -> BatchPlan:
        """One ``EVAL`` per ``SCRIPT_KEYS`` keys; ``read(key, values)`` decodes each key's ``stride`` values.

        ``names(key)``: the Redis keys a key stands for (a sliding window counter is two), passed in
        ``KEYS`` so that ACL key patterns apply; ``args(chunk)``: the ``ARGV`` of one call."""
        chunks = [keys[start : start + SCRIPT_KEYS] for start in range(0, len(keys), SCRIPT_KEYS)]
        commands: list[Command] = []
        for chunk in chunks:
            wired = [wire(name) for key in chunk for name in names(key)]
            commands.append(("EVAL", self.source, len(wired), *wired, *args(chunk)))

        def decode(replies: list[Any]) -> list[tuple[str, Outcome]]:
            out: list[tuple[str, Outcome]] = []
            for chunk, reply in zip(chunks, replies, strict=True):
                values = _values(check_reply(reply))  # the call failed (NOPERM, BUSY…): raised for the caller
                if len(values) != self.stride * len(chunk):
                    raise ResponseError(f"unexpected script reply: {len(values)} values for {len(chunk)} keys")
                rows = zip(*[iter(values)] * self.stride, strict=True)  # stride values at a time
                out += [(key, guarded(read, key, row)) for key, row in zip(chunk, rows, strict=True)]
            return out

        return BatchPlan(commands, decode)


def _values(reply: Any) -> list[Any]:
    """The JSON array of a call, with nil and errors as redis-py gives them (None, ResponseError)."""
    values = json.loads(text(reply))
    if not isinstance(values, list):
        raise ResponseError(f"unexpected script reply of {type(values).__name__}")
    return [
        None if v is False else ResponseError(str(v.get("err"))) if isinstance(v, dict) else v for v in values
    ]


# One SCAN call, its reply as JSON: ["<cursor>", [names…]] (an empty page encodes as {}). Key names are
# the bulk of a page; parsed as one JSON string they cost a fraction of a RESP element each.
SCAN_PAGE = "return cjson.encode(redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3]))"


def scan_command(cursor: int, match: str, count: int, *, scripts: bool) -> Command:
    """One SCAN page of ``match`` from ``cursor`` (read its reply with ``scan_page``)."""
    if scripts:
        return ("EVAL", SCAN_PAGE, 0, cursor, match, count)
    return ("SCAN", cursor, "MATCH", match, "COUNT", count)


def scan_page(reply: Any) -> tuple[int, list[str]]:
    """The next cursor and the key names of a ``scan_command`` reply, either way it was read."""
    reply = check_reply(reply)
    if isinstance(reply, bytes | str):
        cursor, names = json.loads(text(reply))
        return int(cursor), list(names or ())
    cursor, names = reply
    return int(cursor), [text(name) for name in names]


def script_refused(exc: Exception) -> bool:
    """Redis will not run ``EVAL`` for this client at all (ACL, renamed command), as opposed to a failure
    of one call: the plain commands are the way to read then."""
    message = str(exc).lower()  # redis-py drops the "NOPERM " / "ERR " prefix of the reply
    refused = isinstance(exc, NoPermissionError) or "no permissions" in message or "unknown command" in message
    return refused and "'eval'" in message


def values_plan(keys: Sequence[str], read: Callable[[str, Any], Outcome], *, scripts: bool) -> BatchPlan:
    """Keys holding a string each: ``read(key, value)`` for every key that holds one; a key that is gone
    reads as None, a key of another type as a ``Skip``. Plain: MGET and EXISTS of the batch (and a TYPE
    for the nil keys when EXISTS counted more keys than MGET read); gathered: ``STRING_VALUES``."""
    if scripts:
        return STRING_VALUES.plan(keys, lambda k, v: of_type(v[1]) if v[0] is None else read(k, v[0]))
    return BatchPlan(values_and_exists(keys), lambda r: by_value(keys, r[0], r[1], read))


# MGET of the keys, and the type of each key that held no string (what EXISTS + TYPE tell the plain read).
STRING_VALUES = Gatherer(
    """
local values = redis.call('MGET', unpack(KEYS))
for i, key in ipairs(KEYS) do
  local kind = false
  if not values[i] then
    kind = redis.call('TYPE', key)['ok']
  end
  out[2 * i - 1], out[2 * i] = values[i], kind
end
""",
    stride=2,
)
