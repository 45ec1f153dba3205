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
    BadValue,
    BatchPlan,
    Command,
    Outcome,
    Skip,
    by_value,
    check_reply,
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
        # nil (false in Lua) goes out as JSON null: Python's parser makes it None, as redis-py gives nil
        object.__setattr__(self, "source", f"local out = {{}}\n{self.body.strip()}\n{_NILS_AS_NULL}\n"
                                           "return cjson.encode(out)\n")

    def plan(
        self,
        keys: Sequence[str],
        read: Callable[..., Outcome],
        *,
        args: Callable[[Sequence[str]], Sequence[Any]] = lambda chunk: (),
    ) -> BatchPlan:
        """One ``EVAL`` per ``SCRIPT_KEYS`` keys; ``read(key, *values)`` decodes each key's ``stride`` values
        (a value the format does not store: a ``Skip`` of that key). ``args(chunk)``: the ``ARGV`` of one
        call.

        Only the keys read are in ``KEYS``: a partner key (a sliding window's previous window, a token
        bucket's timestamp) is named inside the script from its key, which halves what a read sends and
        what Redis parses. Redis checks the user's ACL key patterns on every command a script runs, so an
        undeclared partner is no way around them (the cluster's rule of declared keys does not apply: the
        reader reads one node, and partners share their key's hash tag)."""
        chunks = [keys[start : start + SCRIPT_KEYS] for start in range(0, len(keys), SCRIPT_KEYS)]
        commands: list[Command] = [
            ("EVAL", self.source, len(chunk), *map(wire, chunk), *args(chunk)) for chunk in chunks
        ]
        stride = self.stride

        def decode(replies: list[Any]) -> list[tuple[str, Outcome]]:
            out: list[tuple[str, Outcome]] = []
            append = out.append
            for chunk, reply in zip(chunks, replies, strict=True):
                values = _values(check_reply(reply))  # the call failed (NOPERM, BUSY…): raised for the caller
                if len(values) != stride * len(chunk):
                    raise ResponseError(f"unexpected script reply: {len(values)} values for {len(chunk)} keys")
                rows = zip(*[iter(values)] * stride, strict=True)  # stride values at a time
                for key, row in zip(chunk, rows, strict=True):
                    try:  # what guarded() does, inline: this loop runs once per key per read
                        append((key, read(key, *row)))
                    except BadValue as exc:
                        append((key, Skip(str(exc))))
            return out

        return BatchPlan(commands, decode)


_NILS_AS_NULL = "for i = 1, #out do if out[i] == false then out[i] = cjson.null end end"


def _values(reply: Any) -> list[Any]:
    """The JSON array of a call, with nil and errors as redis-py gives them (None, ResponseError): nil
    comes as null, an error as the only kind of object."""
    values = json.loads(text(reply), object_hook=_error)
    if not isinstance(values, list):
        raise ResponseError(f"unexpected script reply of {type(values).__name__}")
    return values


def _error(reply: dict[str, Any]) -> ResponseError:
    return ResponseError(str(reply.get("err")))


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
        return STRING_VALUES.plan(keys, lambda k, value, kind: of_type(kind) if value is None else read(k, value))
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
