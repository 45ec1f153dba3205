"""The cluster, wired into the daemon: membership, the scheduler's share and back-off, the result streams
and the *owner scope* of components.

Owner scope is the one way a component does per-integration work exactly once across replicas (read an
integration's quota keys or webhook ledger, cache its tokens, read its real traffic…): a component with
``scope = "owner"`` is handed, right after it is built and again whenever ownership or the config changes,
the config restricted to the integrations this replica owns (``on_config``). It never needs to know about
replicas: an integration that moves away looks to it like one removed from the config (its series
go), one that moves here like one added. Results of integrations owned elsewhere do not reach it.
A daemon on its own hands every component the whole config, as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from monitor.cluster.placement import Change, Placement, Solo
from monitor.cluster.replica import Cluster
from monitor.cluster.streaks import Streaks
from monitor.cluster.streams import ResultStreams
from monitor.settings.cluster import default_replica_id
from monitor.turns import in_turns

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Mapping

    import redis.asyncio

    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult
    from monitor.cluster.membership import Backoff
    from monitor.component import Component
    from monitor.metrics import Metrics
    from monitor.recorder import Recorder
    from monitor.scheduler import Scheduler
    from monitor.settings import Config

log = logging.getLogger(__name__)

CHECKS_FORGOTTEN_A_TURN = 2_000  # probe series of checks moved away dropped between two turns of the loop

OWNER = "owner"


def scope_of(component: object) -> str:
    return str(getattr(component, "scope", "fleet"))


class ClusterRuntime:
    def __init__(self, config: Config, placement: Placement, *, cluster: Cluster | None = None,
                 streams: ResultStreams | None = None, streaks: Streaks | None = None) -> None:
        self.config = config
        self.placement = placement
        self.cluster = cluster
        self.streams = streams
        self.streaks = streaks
        self._scoped: list[Component] = []
        self._lost: set[str] = set()  # integrations moved away whose probe series here are still to go
        self._forgetting: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        redis: redis.asyncio.Redis | None,
        metrics: Metrics,
        redactor: Redactor,
        scheduler: Scheduler,
        recorder: Recorder,
        address: Callable[[], str],
        version: str,
    ) -> ClusterRuntime:
        """Alone (no cluster configured, or no Redis client): ``Solo``, and no cluster metrics."""
        if not config.monitor.clustered or redis is None:
            metrics.drop_cluster_families()
            return cls(config, Solo(config.monitor.cluster.replica_id or default_replica_id()))
        cluster = Cluster(config, redis=redis, metrics=metrics, address=address, version=version, redact=redactor.text)
        streaks = Streaks(redis, cluster, metrics.probes, recorder.status, continued=recorder.continued)

        def record(result: CheckResult) -> None:
            recorder.record(result)
            streaks.noted(result)

        streams = ResultStreams(redis, cluster, record=record, redactor=redactor, metrics=metrics,
                                consumed=streaks.consumed)
        runtime = cls(config, cluster, cluster=cluster, streams=streams, streaks=streaks)
        scheduler.record = streams.route
        scheduler.use_placement(cluster)
        recorder.takes = runtime.takes
        cluster.on_change(runtime._changed(scheduler, recorder))
        cluster.on_backoff(runtime._backoff_to(scheduler))
        return runtime

    # ---- wiring ----------------------------------------------------------------------------------

    def _changed(self, scheduler: Scheduler, recorder: Recorder) -> Callable[[Change], None]:
        def changed(change: Change) -> None:
            if change.checks_gained or change.checks_lost:
                scheduler.reshard()
            if change.integrations_lost or self._lost & change.integrations_gained:
                self._forget_lost(recorder, change.integrations_lost, change.integrations_gained)
            if self.streaks is not None:
                self.streaks.lost(change.integrations_lost)
                self.streaks.gained(change.integrations_gained)
            if self.streams is not None:
                self.streams.taken_over(change.orphaned)
            if change.integrations_gained or change.integrations_lost:
                view = self.owned_view(self.config)
                for component in self._scoped:
                    try:
                        component.on_config(view)
                    except Exception:
                        log.exception("component %s failed to take its new share of integrations", component.name)
        return changed

    def _forget_lost(self, recorder: Recorder, lost: frozenset[str], gained: frozenset[str]) -> None:
        """Drop the probe series and status of integrations moved away (their new owners export them now),
        CHECKS_FORGOTTEN_A_TURN checks a turn (a task): a third of 50,000 checks forgotten in one go held the loop
        ~0.07 s at a change of view. One back here before its turn came is forgotten at once, before a result
        of its is recorded here again: as if forgotten when it moved away."""
        for integration in self._lost & gained:
            self._lost.discard(integration)
            self._forget(recorder, integration)
        self._lost |= lost
        if self._lost and (self._forgetting is None or self._forgetting.done()):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # (no loop: nothing else waits)
                for _ in self._forget_steps(recorder):
                    pass
                return
            self._forgetting = loop.create_task(in_turns(self._forget_steps(recorder)), name="cluster-forget-lost")

    def _forget_steps(self, recorder: Recorder) -> Generator[None, None, None]:
        forgotten = 0
        while self._lost:
            forgotten += self._forget(recorder, self._lost.pop())
            if forgotten >= CHECKS_FORGOTTEN_A_TURN:
                forgotten = 0
                yield

    def _forget(self, recorder: Recorder, integration: str) -> int:
        cfg = self.config.integrations.get(integration)
        checks = cfg.checks if cfg is not None else []
        for check in checks:
            recorder.forget(integration, check.name)
        return len(checks)

    def _backoff_to(self, scheduler: Scheduler) -> Callable[[Mapping[str, Backoff]], None]:
        def apply(table: Mapping[str, Backoff]) -> None:
            for integration in self.config.integrations:
                entry = table.get(integration)
                scheduler.set_interval_factor(integration, entry.factor if entry else 1.0,
                                              entry.reason if entry else "")
        return apply

    def attach(self, component: Component) -> None:
        """A component just built: an owner-scoped one gets its view now (before it starts)."""
        if scope_of(component) == OWNER and self.cluster is not None:
            self._scoped.append(component)
            component.on_config(self.owned_view(self.config))

    def detach_all(self) -> None:
        self._scoped.clear()

    def view_for(self, component: Component, config: Config) -> Config:
        """The config a component is handed on a reload."""
        return self.owned_view(config) if component in self._scoped else config

    def owned_view(self, config: Config) -> Config:
        if self.cluster is None:
            return config
        me = self.cluster.me
        owned = {i: c for i, c in config.integrations.items() if self.cluster.owner_of(i) == me}
        return config.model_copy(update={"integrations": owned})

    def takes(self, component: Component, integration: str) -> bool:
        """Whether a recorded result goes to this component's ``on_result`` (the recorder asks)."""
        return component not in self._scoped or self.placement.owns(integration)

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.streaks is not None:
            self.streaks.start()
        if self.streams is not None:
            self.streams.start()  # read this replica's stream before anyone can send to it
        if self.cluster is not None:
            await self.cluster.start()

    def on_config(self, config: Config) -> None:
        self.config = config
        if self.cluster is not None:
            self.cluster.on_config(config)

    def retain(self, checks: set[tuple[str, str]], removed: set[tuple[str, str]]) -> None:
        """After a reload switched: what is kept about checks no longer configured (or enabled) goes."""
        if self.streaks is not None:
            self.streaks.retain(checks, removed)

    async def leave(self, longest: float) -> None:
        if self.cluster is not None:
            await self.cluster.leave(longest)

    async def close(self) -> None:
        if self._forgetting is not None:  # (a leave hands every integration on: their series go before the end)
            await asyncio.wait({self._forgetting})
        if self.streams is not None:
            await self.streams.close()
        if self.streaks is not None:
            await self.streaks.close()
        if self.cluster is not None:
            await self.cluster.close()

    def status(self) -> dict[str, Any]:
        if self.cluster is None:
            return {"enabled": False}
        return self.cluster.status()

    def ready(self) -> tuple[bool, str]:
        return self.cluster.ready() if self.cluster is not None else (True, "")
