"""Results travel to the owner of their integration: one Redis stream per replica, one entry per batch.

    <prefix>results:<replica id>   stream   entries {s: sender, q: sequence, n: count, b: batch JSON}

A result of a check this replica probes is recorded here when this replica owns the integration, and
otherwise waits up to ``FLUSH_EVERY`` for others: at each flush the waiting results are grouped by their
integration's owner *as the view stands then* (an owner that changed meanwhile gets them directly), and
each owner gets one stream entry carrying all of its results in their order (``result_codec``), all owners
in one pipelined round trip (``XADD … MAXLEN ~``, so a stream whose reader is gone stays bounded; it also
expires a while after its last write). Each replica reads its own stream (``XREAD BLOCK``), then pauses
``READ_GAP`` so that the next read takes what several senders flushed meanwhile, and records what
arrives; a result whose integration moved on meanwhile is passed on once more.

A reload that points a check elsewhere (another kind, other request URLs: ``checks.base.retargets``) makes
what its earlier runs told another endpoint's. Each result travels with the fingerprint of where its check
pointed when it ran (``CheckConfigBase.target_fingerprint``); the owner drops one whose fingerprint is not
its check's as the owner's config has it now (counted as ``stale``): a result of the old endpoint still in
the stream when the owner reloaded, or sent by a replica that had not reloaded yet, or of a check the
owner's config does not have. A result without one (sent by a replica that predates it) is taken as before.

So coordination costs Redis a few commands per flush and replica, whatever the number of checks
(bench/replicas.py), not one per result; a result reaches its owner at most ``FLUSH_EVERY`` +
``READ_GAP`` later than it would with an entry of its own, well inside any alert timing.

Every entry names its sender (the incarnation of its membership) and numbers its results (``q``: the
sequence number of its first result to this stream, ``n``: how many). The reader expects each sender's
next number: results that never arrived — trimmed away while the reader was far behind — are counted as
``lost``, an entry or result that cannot be read is skipped and counted as ``unreadable``.

Exactly once: a flush that fails may still have reached Redis (a timeout or a lost connection after the
command was sent), so its entries are kept as they are and sent again, with the same sender and numbers,
at the next flush, until one goes through; the reader drops an entry whose numbers it has applied
already (counted as ``duplicate``). Their numbers are never given to other results, so an owner never
mistakes new results for old ones. Only when the owner is gone from the view are its unsent results
routed afresh (to the new owner: the one they went to no longer counts them), and only when more than
``MAX_UNCONFIRMED`` results wait are the oldest recorded here.

A crash loses none of them: when its lease runs out, the new owner of each of its integrations drains its
stream (``taken_over``; monitor/cluster/orphans.py says how).

A graceful leave loses none either: the replica that leaves reads its stream a last time as it closes
and passes what it finds on to each integration's new owner (``close``).

Fail open: while the view is frozen because Redis is unreachable, new results are recorded here
instead — the series and alerts of those checks then come from this replica until Redis answers again,
which is better than losing them (alerts/voice.py, the outage voice; its integrations' results stay here
after Redis answers until the alert engine handed them over). Results sent before the outage whose
flush failed wait for Redis instead: their owner may have them already.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from integration_kit.tasks import stop_all
from monitor.cluster.orphans import Drain, Orphans
from monitor.cluster.result_codec import Travelling, decode_batch, encode_batch

if TYPE_CHECKING:
    import redis.asyncio

    from checks.base import CheckConfigBase
    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult
    from monitor.cluster.replica import Cluster
    from monitor.metrics import Metrics
    from monitor.settings import Config

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.25  # seconds a result may wait for others to share its stream entry
READ_GAP = 0.25  # seconds between an owner's reads that took something: entries of several flushes per read
MAX_ENTRY = 500  # results per stream entry (a bigger flush takes several entries)
STREAM_MAXLEN = 1_000  # entries kept per stream (approximate trim): minutes of flushes, ≤ 500,000 results
READ_BLOCK_MS = 1000
READ_COUNT = 100  # entries per read
MAX_HOPS = 1  # a result is passed on at most once after it arrived at a replica that no longer owns it
FAILURE_BACKOFF_MAX = 5.0
PEERS_KEPT = 256  # sequence numbers remembered: senders of the last few hundred incarnations, owners as many
MAX_UNCONFIRMED = 20 * MAX_ENTRY  # results kept for a flush that may not have reached Redis; older: recorded here


@dataclass
class _Entry:
    """A stream entry as sent, kept until Redis confirmed it (then sent again exactly as it was)."""

    owner: str
    fields: dict[Any, Any]
    items: list[Travelling]


class ResultStreams:
    def __init__(
        self,
        redis: redis.asyncio.Redis,
        cluster: Cluster,
        *,
        record: Callable[[CheckResult], None],
        redactor: Redactor,
        consumed: Callable[[str, list[Any]], None] | None = None,
        metrics: Metrics,
        flush_every: float = FLUSH_EVERY,
    ) -> None:
        self.redis = redis
        self.cluster = cluster
        self.record = record
        self.consumed = consumed  # entries of this replica's stream whose results were recorded (to delete)
        self.redactor = redactor
        self.flush_every = flush_every
        counter = metrics.cluster_results
        self._sent, self._received, self._kept = (counter.labels(path=p) for p in ("sent", "received", "kept"))
        self._unreadable, self._lost = counter.labels(path="unreadable"), counter.labels(path="lost")
        self._duplicate, self._recovered = counter.labels(path="duplicate"), counter.labels(path="recovered")
        self._stale_results = counter.labels(path="stale")
        self._prefix = f"{cluster.cfg.key_prefix}results:"
        self._pending: list[Travelling] = []  # in the order they were routed
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._expired_at: dict[str, float] = {}
        self._next_seq: dict[str, int] = {}  # owner → sequence number of the next result sent to it
        self._unconfirmed: list[_Entry] = []  # sent by a flush that failed: maybe in Redis, maybe not
        self._send_failures = 0
        self._expected: dict[str, int] = {}  # sender → sequence number of its next result to this stream
        self._key = ""  # this replica's stream, as last read
        self._last: Any = None  # id of the last entry read from it (None: not started)
        self._read_ids: list[Any] = []  # entries of it read since ``consumed`` was last told
        self._orphans = Orphans(cluster, self.stream)  # crashed replicas' streams drained here
        self._checks_of: Config | None = None  # the config ``_checks`` was read from
        self._checks: dict[str, dict[str, CheckConfigBase]] = {}  # integration → its checks by name (as asked)
        self._tasks: list[asyncio.Task[None]] = []
        self._read_failures = 0
        self._closing = False

    def stream(self, member: str) -> str:
        return self._prefix + member

    @property
    def sender(self) -> str:
        return self.cluster.membership.incarnation

    # ---- sending ------------------------------------------------------------------------------------

    def route(self, result: CheckResult) -> None:
        """Where a result this replica probed goes: recorded here, or sent to its integration's owner with
        where its check points now (the scheduler records no run that began before a reload retargeted its
        check). Never raises."""
        if not self._here((result, 0, None), stopped=not self._tasks):  # None: stamped if it is held back
            self._pending.append((result, 0, self._target(result.integration, result.check)))
            self._wake.set()

    def _route(self, item: Travelling) -> None:
        if not self._here(item, stopped=not self._tasks):
            self._pending.append(item)
            self._wake.set()

    def _target(self, integration: str, check: str) -> str | None:
        """Where the check points in this replica's config now (None: not configured here)."""
        config = self.cluster.config
        if config is not self._checks_of:  # reloaded
            self._checks_of, self._checks = config, {}
        checks = self._checks.get(integration)
        if checks is None:
            icfg = config.integrations.get(integration)
            checks = self._checks[integration] = {c.name: c for c in icfg.checks} if icfg is not None else {}
        found = checks.get(check)
        return None if found is None else found.target_fingerprint

    def _stale(self, item: Travelling) -> bool:
        """A received result of an endpoint its check does not point at here (a reload retargeted it since
        the run, here or at the prober), or of a check not configured here: counted, to be dropped."""
        result, _, target = item
        if target is None or target == self._target(result.integration, result.check):
            return False
        self._stale_results.inc()
        return True

    def _here(self, item: Travelling, *, stopped: bool = False) -> bool:
        """Records the result here if it is not to travel (owned here, Redis unreachable, or ``stopped``)."""
        result = item[0]
        cluster = self.cluster
        owner = cluster.owner_of(result.integration)
        if owner is None or owner == cluster.me or cluster.degraded or cluster.holds(result.integration) or stopped:
            if owner is not None and owner != cluster.me:
                self._kept.inc()
            self._record(item)
            return True
        return False

    def _record(self, item: Travelling) -> None:
        result, hops, target = item
        if result.integration in self._orphans.draining:
            # It may travel yet (its integration moves on meanwhile): with where its check points now.
            self._orphans.hold(item if target is not None else
                               (result, hops, self._target(result.integration, result.check)))
            return
        self._record_now(result)

    def _record_now(self, result: CheckResult) -> None:
        try:
            self.record(result)
        except Exception:
            log.exception("recording the result of %s/%s failed", result.integration, result.check)

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.flush_every)
            self._wake.clear()
            async with self._flushing:  # close() waits for a flush under way rather than cut it off
                await self.flush()
            if self._unconfirmed:  # try again, backing off while Redis keeps failing
                self._wake.set()
                await asyncio.sleep(min(FAILURE_BACKOFF_MAX, 0.1 * 2 ** min(self._send_failures, 10)))

    async def flush(self) -> None:
        """Send every waiting result to its integration's owner as the view stands now, after the entries of
        a failed flush (sent again as they were). Never raises."""
        batch, self._pending = self._pending, []
        entries, self._unconfirmed = self._unconfirmed, []
        if entries:
            gone = [e for e in entries if e.owner not in self.cluster.members]
            entries = [e for e in entries if e.owner in self.cluster.members]
            batch = [item for e in gone for item in e.items] + batch  # their owner no longer counts them
        by_owner: dict[str, list[Travelling]] = {}
        for item in batch:
            if not self._here(item):
                by_owner.setdefault(self.cluster.owner_of(item[0].integration) or "", []).append(item)
        for owner, items in by_owner.items():
            for start in range(0, len(items), MAX_ENTRY):
                entries.append(self._entry(owner, items[start:start + MAX_ENTRY]))
        if entries:
            await self._send(entries)

    def _entry(self, owner: str, items: list[Travelling]) -> _Entry:
        """The next entry to ``owner``: its numbers are taken for good (they may reach the owner)."""
        seq = self._next_seq.pop(owner, 0)
        self._next_seq[owner] = seq + len(items)  # popped and set again: the most recent owners are kept
        if len(self._next_seq) > PEERS_KEPT:
            del self._next_seq[next(iter(self._next_seq))]
        fields = {"s": self.sender, "q": seq, "n": len(items), "b": encode_batch(items, self.redactor)}
        return _Entry(owner, fields, items)

    async def _send(self, entries: list[_Entry]) -> None:
        now = time.monotonic()
        ttl = self.cluster.cfg.ttl
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.xadd(self.stream(entry.owner), entry.fields, maxlen=STREAM_MAXLEN, approximate=True)
                for owner in {entry.owner for entry in entries}:
                    if now - self._expired_at.get(owner, float("-inf")) > ttl:
                        # A stream nobody reads any more (its replica is gone) disappears on its own.
                        pipe.expire(self.stream(owner), max(60, round(ttl * 10)))
                        self._expired_at[owner] = now
                async with asyncio.timeout(max(2.0, self.cluster.cfg.heartbeat)):
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self._send_failures += 1
            self._expired_at.clear()
            self._unconfirmed = entries + self._unconfirmed
            self._give_up_oldest()
            if self._send_failures == 1:
                log.warning("cluster: %d result(s) could not be sent to their owners (%s); sending them again",
                            sum(len(e.items) for e in self._unconfirmed), type(exc).__name__)
            return
        if self._send_failures:
            log.info("cluster: results reach their owners again after %d failed flush(es)", self._send_failures)
        self._send_failures = 0
        self._sent.inc(sum(len(entry.items) for entry in entries))
        for entry in entries:
            for result, _, _ in entry.items:
                self.cluster.delivered(f"{result.integration}/{result.check}", result.ok)
        for gone in set(self._expired_at) - set(self.cluster.members):
            self._expired_at.pop(gone, None)

    def _give_up_oldest(self) -> None:
        """Bound what waits for Redis: beyond ``MAX_UNCONFIRMED`` results the oldest entries are recorded
        here (their owner may count them too, or as ``lost`` if they never arrived)."""
        waiting = sum(len(entry.items) for entry in self._unconfirmed)
        while waiting > MAX_UNCONFIRMED:
            entry = self._unconfirmed.pop(0)
            waiting -= len(entry.items)
            log.warning("cluster: %d result(s) for %s recorded here: Redis has not taken them for too long",
                        len(entry.items), entry.owner)
            self._kept.inc(len(entry.items))
            for item in entry.items:
                self._record(item)

    # ---- receiving ----------------------------------------------------------------------------------

    async def read(self, block_ms: int | None = None) -> int:
        """Read what arrived in this replica's stream since the last read (waiting up to ``block_ms`` for
        something) and record or pass it on; the number of entries taken. Raises what redis-py raises.
        The first read (or the first after the replica's id changed) only marks where reading starts:
        older entries were for an earlier run of this replica."""
        key = self.stream(self.cluster.me)
        if key != self._key or self._last is None:
            self._report_consumed()
            newest = await self.redis.xrevrange(key, count=1)
            self._key, self._last = key, newest[0][0] if newest else "0-0"
            self._expected.clear()
        self._end_drains()
        # One read for all: a sender's results to the crashed owner come before its later ones to this
        # replica, and Redis answers for every stream at one instant, so handling the drains first keeps
        # each check's results in order.
        wanted: dict[Any, Any] = self._orphans.wanted()
        wanted[key] = self._last
        block = None if self._orphans.waiting else block_ms
        reply: Any = await self.redis.xread(wanted, count=READ_COUNT, block=block)
        found = {_text(name): batch for name, batch in (reply.items() if isinstance(reply, dict) else reply or ())}
        self._orphans.took(found, self._receive, READ_COUNT)
        entries: list[tuple[Any, dict[Any, Any]]] = found.get(key, [])
        for entry_id, fields in entries:
            self._last = entry_id
            self._read_ids.append(entry_id)
            self._receive(fields)
        self._end_drains()
        return len(entries)

    # ---- a crashed owner's stream ---------------------------------------------------------------------

    def taken_over(self, orphaned: Mapping[str, str]) -> None:
        """This replica now owns these integrations, whose previous owner's lease ran out: integration →
        that replica. Their results wait until its stream has been read to the end (``read``)."""
        if not orphaned:
            return
        self._orphans.taken_over(orphaned)
        self._end_drains()

    def _end_drains(self) -> None:
        """Release the results held back for drains read to their end (or given up: Redis failing), and
        forget the drains followed long enough."""
        for result, _, target in self._orphans.end():
            if not self._here((result, MAX_HOPS, target)):  # moved on meanwhile: to its owner now, recorded there
                self._pending.append((result, MAX_HOPS, target))
                self._wake.set()
        if not self._orphans.draining:
            self._report_consumed()

    def _report_consumed(self) -> None:
        """Tell ``consumed`` which entries of this replica's stream are recorded (none while some of their
        results are held back, nor while this replica may have lost its share unawares: paused, the new
        owners may be draining its stream)."""
        ids, self._read_ids = self._read_ids, []
        if ids and self.consumed is not None and self.cluster.may_run():
            self.consumed(self._key, ids)  # else left in the stream (it expires once nobody writes to it)

    async def _receiver(self) -> None:
        while True:
            try:
                taken = await self.read(READ_BLOCK_MS)
            except (RedisError, OSError) as exc:
                if self._closing:
                    return  # redis-py may turn the cancellation of a blocking read into a connection error
                self._read_failures += 1
                self._end_drains()  # results held back for a drain are recorded once it is given up
                if self._read_failures == 1:
                    log.warning("cluster: cannot read results sent to this replica (%s); retrying",
                                type(exc).__name__)
                await asyncio.sleep(min(FAILURE_BACKOFF_MAX, 0.1 * 2 ** min(self._read_failures, 10)))
                continue
            self._read_failures = 0
            if 0 < taken < READ_COUNT and not self._orphans.draining:
                await asyncio.sleep(READ_GAP)  # not behind: let the next read take several flushes at once

    def _receive(self, fields: dict[Any, Any], drain: Drain | None = None) -> None:
        """An entry of this replica's stream, or of a crashed replica's (``drain``: only the results of the
        integrations taken over from it are recorded; another replica took the others)."""

        def field(name: str) -> Any:
            return fields.get(name.encode(), fields.get(name))

        try:
            sender, seq, count = _text(field("s")), int(field("q")), int(field("n"))
            items, unreadable = decode_batch(field("b"))
        except (ValueError, TypeError, AttributeError) as exc:
            self._unreadable.inc()
            log.warning("cluster: skipping an unreadable entry in this replica's result stream (%s)",
                        type(exc).__name__)
            return
        if not self._follow(sender, seq, count, self._expected if drain is None else drain.expected):
            self._duplicate.inc(len(items))
            return
        if unreadable:
            self._unreadable.inc(unreadable)
            log.warning("cluster: skipping %d unreadable result(s) of an entry from %s", unreadable, sender)
        if drain is not None:
            for item in items:
                result = item[0]
                if drain.takes(result.integration, self.cluster) and not self._stale(item):
                    self._recovered.inc()
                    self._record_now(result)
            return
        self._received.inc(len(items))
        for item in items:
            result, hops, target = item
            if self._stale(item):
                continue
            if self.cluster.owns(result.integration) or hops >= MAX_HOPS:
                self._record(item)
            else:
                self._route((result, hops + 1, target))  # its integration moved on while it travelled

    def _follow(self, sender: str, seq: int, count: int, expecting: dict[str, int]) -> bool:
        """Whether the entry is new: False for one sent again whose numbers were applied already. Counts
        the results of ``sender`` that never arrived (numbers skipped since its last entry). ``expecting``:
        sender → its next number, in the stream the entry was read from."""
        expected = expecting.pop(sender, None)
        if expected is not None and seq < expected:
            expecting[sender] = expected  # an entry sent again after a flush that seemed to fail
            return False
        if expected is not None and seq > expected:
            self._lost.inc(seq - expected)
            log.warning("cluster: %d result(s) from %s never arrived (trimmed from this replica's stream before "
                        "it read them)", seq - expected, sender)
        expecting[sender] = seq + count  # popped and set again: the most recent senders are kept
        if len(expecting) > PEERS_KEPT:
            del expecting[next(iter(expecting))]
        return True

    # ---- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._receiver(), name="cluster-results-in"),  # first: see close()
                       loop.create_task(self._sender(), name="cluster-results-out")]

    async def close(self) -> None:
        """Stop reading, pass on what is still unread in this replica's stream (after a graceful leave its
        integrations are owned elsewhere: nobody else reads it), send what is still waiting (bounded)."""
        tasks = self._tasks
        self._closing = True
        async with self._flushing:  # close() waits for a flush under way rather than cut it off
            await stop_all(tasks[:1])  # the receiver
            if tasks:
                try:
                    async with asyncio.timeout(max(2.0, self.cluster.cfg.heartbeat)):
                        await self.read()
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning("cluster: could not read this replica's result stream a last time (%s)",
                                type(exc).__name__)
            self._tasks = []
            await stop_all(tasks[1:])
        await self.flush()
        self._report_consumed()
        if self._unconfirmed:
            log.warning("cluster: %d result(s) may not have reached their owners: Redis did not confirm them "
                        "before shutdown", sum(len(entry.items) for entry in self._unconfirmed))


def _text(value: Any) -> str:
    if value is None:
        raise ValueError("missing field")
    return value.decode() if isinstance(value, bytes) else str(value)
