"""Read one Redis quota, read after read: remember its keys, discover new ones a few SCAN pages at a time,
read every known key in one pipeline, summarise.

Discovery. SCAN walks the whole keyspace (it cannot skip keys that do not match), so walking it at
every read cost one round trip per ``scan_count`` keys of the database. Instead the walk is spread: each
read SCANs a share of the keyspace, sized from DBSIZE so that one pass over it takes about
``rescan_interval`` (the first read walks it all). Keys found are remembered and read at every read from
then on, so a key that a limiter deletes and writes again under the same name (a fixed window's counter)
is read at once, and a new key name is read at most about ``rescan_interval`` after it appears. A
remembered key that a whole pass neither found nor read is forgotten.

Memory is bounded: at most ``max_keys`` key names are remembered (and read); names found beyond it, and
names that are not in the quota's format, are only counted, per SCAN pass (with a few examples of the
latter), never kept.

Reads. One pipeline for every known key, with the PTTL of the previous read's busiest key riding along
(it is usually the busiest again; otherwise one more PTTL). Where a format's plain commands cost one or
more commands per key (lists, sorted sets, hashes, key pairs), a Lua script gathers the same replies
server-side (``integration_kit.limiter_formats.scripts``); if Redis refuses ``EVAL``, this reader uses
the plain commands from then on (logged once). Round trips of a read: the SCAN pages of its share (the
first travels with TIME and DBSIZE), the pipeline, a follow-up pipeline when some key needs a second look,
a PTTL when the busiest key changed; 10,000 keys among 100,000 take 4 (bench/quota_read.py).

A pattern that matches many keys (one per customer, say) is summarised: the busiest key (highest usage
ratio, or usage when there is no limit) stands for the quota, plus how many keys there are and how many
are above ``near_limit``. Keys are never labels. Nothing here writes to Redis; the state (key names, the
SCAN cursor) is this process's own, so replicas reading the same quota do not disturb each other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from integration_kit.limiter_formats import Command, KeyPlan, KeyReading, Skip, reader_for, wire
from integration_kit.limiter_formats.scripts import scan_command, scan_page, script_refused
from integration_kit.results import QuotaObservation
from monitor.settings.quota import RedisQuotaConfig

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

EXAMPLES = 3  # unrecognised key names kept per SCAN pass, to show in the log


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaReading:
    observation: QuotaObservation  # the busiest key's reading; used 0 when no key matched (of the
    # configured limit, or the last one read; None if neither is known)
    busiest_key: str | None
    keys: int  # keys read (a sliding window's current + previous pair counts once)
    keys_near_limit: int  # keys with used / limit above the quota's near_limit
    fixed_window: bool  # the busiest key's window empties at reset (used by the exhaustion projection)
    skipped: tuple[tuple[str, str], ...]  # (key, reason) of keys of an unexpected type or value
    round_trips: int
    # Of the last complete SCAN pass: names the pattern matched that are not in the format (how many, the
    # first few), and names not read because max_keys were remembered already.
    unrecognised: int = 0
    unrecognised_examples: tuple[str, ...] = ()
    over_max_keys: int = 0


async def read_redis_quota(client: redis.asyncio.Redis, cfg: RedisQuotaConfig) -> QuotaReading:
    """One read of a quota from scratch (a whole SCAN pass). Raises redis errors like ``QuotaReader.read``."""
    return await QuotaReader(cfg).read(client)


class QuotaReader:
    """The reads of one quota; keeps the key names and the SCAN cursor between reads."""

    def __init__(self, cfg: RedisQuotaConfig, *, label: str = "", scripts: bool = True) -> None:
        self.cfg = cfg
        self.label = label or cfg.name  # for logs
        self.format = reader_for(cfg)
        self.scripts = scripts  # False: the plain commands (also once Redis refused EVAL)
        self.passes = 0  # complete SCAN passes over the keyspace
        self._known: dict[str, None] = {}  # key names (insertion-ordered set), read at every read
        self._seen: set[str] = set()  # found by SCAN during the current pass
        self._present: set[str] = set()  # read and there during the current pass
        self._cursor = 0
        self._credit = 0.0  # SCAN pages owed to the current pass
        self._pass_unrecognised: list[str] = []  # the first EXAMPLES names of the current pass
        self._pass_counts = [0, 0]  # unrecognised names, names over max_keys: current pass
        self._counts: tuple[int, int, tuple[str, ...]] = (0, 0, ())  # the last complete pass's, with examples
        self._ttl_key: str | None = None  # the previous busiest key, when its reset is its TTL
        # The limit of the last key read: when every key has expired (an idle limiter's window ran out),
        # the quota reads 0 used of that limit rather than 0 of an unknown one (formats whose keys carry
        # their limit, ``limits``, have no configured one).
        self._last_limit: float | None = None

    @property
    def known_keys(self) -> int:
        return len(self._known)

    async def read(self, client: redis.asyncio.Redis) -> QuotaReading:
        """Raises redis errors (connection, timeout, ACL) for the caller to back off; the keys found so
        far are kept, and the next read goes on from where the walk stopped."""
        now, round_trips = await self._discover(client)
        readings, skipped, ttl_reply, trips = await self.read_keys(client, list(self._known), now)
        round_trips += trips
        busiest, near = _busiest(readings, self.cfg.near_limit)
        if busiest is not None and busiest.reset_from_ttl is not None:
            if busiest.key != self._ttl_key or ttl_reply is None:
                ttl_reply = await client.execute_command("PTTL", wire(busiest.key))
                round_trips += 1
            busiest = replace(busiest, reset_seconds=busiest.reset_from_ttl(ttl_reply), reset_from_ttl=None)
            self._ttl_key = busiest.key
        else:
            self._ttl_key = None
        if busiest is not None and busiest.limit:
            self._last_limit = busiest.limit
        idle_limit = self.format.limit if self.format.limit is not None else self._last_limit
        reading = _summarise(self.cfg, idle_limit, len(readings), near, busiest, skipped, now, round_trips)
        unrecognised, over, examples = self._counts
        return replace(reading, unrecognised=unrecognised, unrecognised_examples=examples, over_max_keys=over)

    # ---- discovery ------------------------------------------------------------------------------------

    async def _discover(self, client: redis.asyncio.Redis) -> tuple[float, int]:
        """This read's share of the SCAN pass; Redis' TIME as "now" (the limiters write with it, so
        there is no skew to correct)."""
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("TIME")
        pipe.execute_command("DBSIZE")
        pipe.execute_command(*self._scan_command())
        clock, size, reply = await pipe.execute(raise_on_error=False)
        for answer in (clock, size):
            if isinstance(answer, Exception):
                raise answer
        pages, round_trips = self._pages(int(size)), 1
        while True:
            if isinstance(reply, ResponseError) and self.scripts and script_refused(reply):
                self._refuse_scripts(reply)
                reply = (await _run(client, [self._scan_command()]))[0]
                round_trips += 1
            self._cursor, names = scan_page(reply)
            self._found(names)
            if self._cursor == 0:
                self._end_pass()
                break
            if pages is not None and round_trips >= pages:
                break
            reply = (await _run(client, [self._scan_command()]))[0]
            round_trips += 1
        seconds, micros = clock
        return int(seconds) + int(micros) / 1_000_000, round_trips

    def _scan_command(self) -> Command:
        return scan_command(self._cursor, self.cfg.match, self.cfg.scan_count, scripts=self.scripts)

    def _pages(self, dbsize: int) -> int | None:
        """SCAN calls for this read: the whole pass at first (None), then this read's share of one pass per
        rescan_interval (2.5 pages a read are 2 and 3 in turn)."""
        if self.passes == 0:
            return None
        reads_per_pass = max(1, round(self.cfg.rescan_interval / self.cfg.interval))
        self._credit += dbsize / (self.cfg.scan_count * reads_per_pass)
        pages = max(1, int(self._credit))
        self._credit = max(0.0, self._credit - pages)
        return pages

    def _found(self, names: list[str]) -> None:
        known, seen = self._known, self._seen
        for key in names:
            if key in known:  # most names of a pass: a known key is its own primary
                seen.add(key)
                continue
            main = self.format.primary(key)
            if main is None:
                self._pass_counts[0] += 1
                if len(self._pass_unrecognised) < EXAMPLES:
                    self._pass_unrecognised.append(key)
            elif main in self._known or len(self._known) < self.cfg.max_keys:
                self._seen.add(main)
                self._known.setdefault(main, None)
            else:
                self._pass_counts[1] += 1

    def _end_pass(self) -> None:
        self._known = {k: None for k in self._known if k in self._seen or k in self._present}
        self._seen, self._present = set(), set()
        self._counts = (self._pass_counts[0], self._pass_counts[1], tuple(self._pass_unrecognised))
        self._pass_counts, self._pass_unrecognised = [0, 0], []
        self.passes += 1

    # ---- reads ----------------------------------------------------------------------------------------

    async def read_keys(
        self, client: redis.asyncio.Redis, keys: list[str], now: float
    ) -> tuple[list[KeyReading], list[tuple[str, str]], Any, int]:
        """``keys`` as of ``now`` in one pipeline (plus follow-ups), with the PTTL of the previous busiest
        key: the readings, the skipped keys, that PTTL's reply (None if not asked) and the round trips."""
        if not keys:
            return [], [], None, 0
        plan = self.format.plan(keys, now, scripts=self.scripts)
        ttl: list[Command] = [("PTTL", wire(self._ttl_key))] if self._ttl_key else []
        replies = await _run(client, [*plan.commands, *ttl])
        try:
            outcomes = plan.decode(replies[: len(plan.commands)])
        except ResponseError as exc:
            if not (self.scripts and script_refused(exc)):
                raise
            self._refuse_scripts(exc)
            readings_, skipped_, ttl_reply, trips = await self.read_keys(client, keys, now)
            return readings_, skipped_, ttl_reply, trips + 1
        readings: list[KeyReading] = []
        skipped: list[tuple[str, str]] = []
        round_trips = 1
        present = self._present
        while outcomes:  # follow-ups (a second look at some keys) travel together in one more pipeline
            follow_ups: list[tuple[str, KeyPlan]] = []
            for key, outcome in outcomes:  # once per key per read: by exact type, inline
                kind = type(outcome)
                if kind is KeyReading:
                    readings.append(outcome)  # type: ignore[arg-type]
                    present.add(key)
                elif kind is KeyPlan:
                    follow_ups.append((key, outcome))  # type: ignore[arg-type]
                elif kind is Skip:
                    skipped.append((key, outcome.reason))  # type: ignore[union-attr]
                    present.add(key)
            outcomes = []
            if follow_ups:
                answers = await _run(client, [cmd for _, plan_ in follow_ups for cmd in plan_.commands])
                round_trips += 1
                offset = 0
                for key, plan_ in follow_ups:
                    outcomes.append((key, plan_.decode(answers[offset : offset + len(plan_.commands)])))
                    offset += len(plan_.commands)
        return readings, skipped, (replies[-1] if ttl else None), round_trips

    def _refuse_scripts(self, exc: Exception) -> None:
        self.scripts = False
        log.warning(
            "quota %s: Redis refused EVAL (%s); reading with plain commands, one or more per key "
            "(grant +eval to the monitor's Redis user for fewer)", self.label, exc,
        )


async def _run(client: redis.asyncio.Redis, commands: Sequence[Command]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    # Errors come back in place (WRONGTYPE is how a limits key tells its strategy); the decoders
    # raise the ones that are not about the key.
    return list(await pipe.execute(raise_on_error=False))


def _busiest(readings: list[KeyReading], near_limit: float) -> tuple[KeyReading | None, int]:
    """The busiest key (highest used / limit, or used where there is no limit; ties to the same key at
    every read, whatever order the keys were read in) and how many keys are above ``near_limit``: one pass,
    each ratio computed once (this runs once per key per read)."""
    best: KeyReading | None = None
    best_rank = (-2.0, 0.0, "")
    near = 0
    for r in readings:
        limit = r.limit
        ratio = r.used / limit if limit else -1.0
        if ratio > near_limit:
            near += 1
        if ratio >= best_rank[0]:
            rank = (ratio, r.used, r.key)
            if rank > best_rank:
                best, best_rank = r, rank
    return best, near


def _summarise(
    cfg: RedisQuotaConfig,
    idle_limit: float | None,
    keys: int,
    near: int,
    busiest: KeyReading | None,
    skipped: list[tuple[str, str]],
    now: float,
    round_trips: int,
) -> QuotaReading:
    if busiest is None:
        observation = QuotaObservation(
            policy=cfg.name, used=0.0, limit=idle_limit, reset_seconds=None,
            window_seconds=cfg.window, observed_at=now,
        )
    else:
        observation = QuotaObservation(
            policy=cfg.name, used=busiest.used, limit=busiest.limit, reset_seconds=busiest.reset_seconds,
            window_seconds=busiest.window_seconds, observed_at=now,
        )
    return QuotaReading(
        observation=observation,
        busiest_key=busiest.key if busiest else None,
        keys=keys,
        keys_near_limit=near,
        fixed_window=busiest.fixed_window if busiest else False,
        skipped=tuple(skipped),
        round_trips=round_trips,
    )
