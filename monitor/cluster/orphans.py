"""The result stream of a crashed owner, read by the new owners of its integrations.

A crash loses none of the results sent to an owner: it deletes the entries it read only together with its
next write of the failure counts they changed (``Streaks.consumed``, one pipelined round trip), so what is
left in its stream is what no count in Redis includes yet. When its lease runs out, the new owner of each
of its integrations drains that stream (``taken_over``): it holds back that integration's other results
until it has read the stream to its end, records that integration's results from it in their order (each
result is taken by the one replica that owns its integration now), then follows the stream a while longer
for senders that had not yet noticed the crash. The stream is left to expire (a while after its last
write: ``ResultStreams._send``). Lost at a crash: what the crashed replica probed itself and recorded after
its last write of the counts (up to ``streaks.FLUSH_EVERY``), and what it passed on but had not sent yet.

``Orphans`` keeps the drains under way and the results held back meanwhile; ``ResultStreams``
(monitor/cluster/streams.py) reads the drained streams in the same ``XREAD`` as its own and records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.cluster.replica import Cluster
    from monitor.cluster.result_codec import Travelling

log = logging.getLogger(__name__)


@dataclass
class Drain:
    """The stream of a crashed replica, read by the new owner of some of its integrations (``taken_over``)."""

    integrations: set[str]
    until: float  # monotonic: followed until then, for senders that have not noticed the crash yet
    last: Any = "0-0"  # id of the last entry read from it
    expected: dict[str, int] = field(default_factory=dict)  # as ``ResultStreams._expected``, for this stream
    passed: bool = False  # read to its end once: its integrations' other results are no longer held back

    def takes(self, integration: str, cluster: Cluster) -> bool:
        """Whether this replica records a result of ``integration`` read from this stream (another replica
        took the crashed one's other integrations)."""
        return integration in self.integrations and cluster.owns(integration)


class Orphans:
    """The streams of crashed replicas this replica drains, and the results held back until they are read."""

    def __init__(self, cluster: Cluster, stream: Callable[[str], str]) -> None:
        self.cluster = cluster
        self._stream = stream  # replica id → its result stream
        self.drains: dict[str, Drain] = {}  # stream of a crashed replica → its drain
        self.draining: frozenset[str] = frozenset()  # integrations whose results wait for a drain
        self._held_back: list[Travelling] = []  # those results, in their order

    def taken_over(self, orphaned: Mapping[str, str]) -> None:
        """This replica now owns these integrations, whose previous owner's lease ran out: integration →
        that replica. Their results wait until its stream has been read to the end (then ``end``)."""
        cfg = self.cluster.cfg
        # A sender notices the crash at its next heartbeat; what it flushed before reaches Redis within
        # its send timeout.
        until = time.monotonic() + cfg.ttl + 2 * max(2.0, cfg.heartbeat)
        for integration, previous in orphaned.items():
            name = self._stream(previous)
            drain = self.drains.setdefault(name, Drain(set(), until))
            drain.integrations.add(integration)
            drain.passed, drain.until = False, max(drain.until, until)
            log.info("cluster: reading %s's result stream for %s (its lease ran out)", previous, integration)

    def wanted(self) -> dict[Any, Any]:
        """Each drained stream → the id of the last entry read from it (for an ``XREAD``)."""
        return {name: drain.last for name, drain in self.drains.items()}

    def took(self, found: Mapping[str, list[tuple[Any, dict[Any, Any]]]],
             receive: Callable[[dict[Any, Any], Drain], None], count: int) -> None:
        """What one ``XREAD`` of at most ``count`` entries a stream found in the drained streams (stream →
        its entries): each entry to ``receive``, in order; a stream that had fewer is read to its end."""
        for name, drain in self.drains.items():
            batch = found.get(name, [])
            for entry_id, fields in batch:
                drain.last = entry_id
                receive(fields, drain)
            drain.passed = drain.passed or len(batch) < count

    @property
    def waiting(self) -> bool:
        """A drained stream has not been read to its end yet: the next read must not block."""
        return any(not drain.passed for drain in self.drains.values())

    def hold(self, item: Travelling) -> None:
        """A result of a ``draining`` integration: after the older results still in the crashed owner's stream."""
        self._held_back.append(item)

    def end(self) -> list[Travelling]:
        """Forget the drains followed long enough; the results held back for drains read to their end (or
        given up: Redis failing), in their order, to be recorded or passed on now."""
        now = time.monotonic()
        for name, drain in list(self.drains.items()):
            if now >= drain.until:
                drain.passed = True
                del self.drains[name]
        draining = frozenset(i for drain in self.drains.values() if not drain.passed for i in drain.integrations)
        if draining == self.draining:
            return []
        self.draining = draining
        held, self._held_back = self._held_back, []
        return held
