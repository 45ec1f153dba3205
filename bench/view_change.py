"""What a cluster's view change holds the event loop for, listener by listener (issue 16 item 4): a replica of
``--checks`` checks (scale.py's shape, 100 an integration, 60 s) sees two replicas join, then one of them
crash, with the daemon's own parts in-process (App: scheduler, recorder, streams, streaks, alert engine and
the other default components; probes a no-op returning a result) on a redis-server of its own.

The two others are leases only (``Membership`` beating in this process, the same fleet): the replica under
test hears of them as it would of real ones, through its heartbeats, and applies each change at the
announced instant. Measured at each change:

* the CPU time of each part of the change applied in one go (``Cluster._apply``): the placement computed
  (``Assignment.compute``), each listener (the scheduler's reshard, the recorder, streaks and streams, the
  owner-scoped components; the alert engine's), the back-off published, and the whole call;
* the loop's longest turns from the change until the jobs match the share and 5 s more, each with what ran
  in it (the callback or task: asyncio's ``Handle._run`` timed), and a 2 ms timer's latest wake-up (the
  wait a ``/healthz`` request had then).

``--before TREE``: another checkout too (PYTHONPATH=TREE), interleaved, ``--rounds`` each.
Usage: python bench/view_change.py [--checks 50000] [--rounds 2] [--before TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TICK = 0.002  # seconds between the timer's wake-ups
AFTER = 5.0  # seconds watched after the jobs match the share
TOP = 6  # longest turns reported per change


class Turns:
    """Every callback the loop runs, timed (wall and CPU); the longest kept with what ran."""

    def __init__(self) -> None:
        self.on = False
        self.longest: list[tuple[float, float, str]] = []  # (wall s, CPU s, what)

    def install(self) -> None:
        handle_run = asyncio.events.Handle._run
        turns = self

        def timed_run(handle: asyncio.events.Handle) -> None:
            if not turns.on:
                handle_run(handle)
                return
            t0, c0 = time.perf_counter(), time.thread_time()
            handle_run(handle)
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            if wall > 0.005:
                turns.longest.append((wall, cpu, describe(handle)))

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]

    def top(self) -> list[tuple[float, float, str]]:
        return sorted(self.longest, reverse=True)[:TOP]


def describe(handle: asyncio.events.Handle) -> str:
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task {getattr(coro, '__qualname__', coro)}"
    return getattr(callback, "__qualname__", repr(callback))[:80]


@contextlib.contextmanager
def timing(spent: dict[str, float], name: str) -> Iterator[None]:
    cpu = time.thread_time()
    try:
        yield
    finally:
        spent[name] = spent.get(name, 0.0) + time.thread_time() - cpu


def listener_name(listener: Callable[..., Any]) -> str:
    qualname = getattr(listener, "__qualname__", repr(listener))
    return {"ClusterRuntime._changed.<locals>.changed": "runtime (reshard, recorder, streaks, streams, components)",
            "alerts.<locals>.<lambda>": "alert engine"}.get(qualname, qualname)


async def run(checks: int, redis_port: int) -> list[dict[str, Any]]:
    sys.path.insert(0, str(HERE))
    import redis.asyncio
    from replicas import config_text
    from takeover_turns import polled

    from checks.base import CheckConfigBase, ProbeContext
    from integration_kit.results import CheckResult
    from monitor import long_lived
    from monitor.app import App
    from monitor.cluster import placement as placement_module
    from monitor.cluster import replica as replica_module
    from monitor.cluster.membership import Membership
    from monitor.settings import parse_config

    text = config_text("http://127.0.0.1:9/ok", checks, f"redis://127.0.0.1:{redis_port}/0")
    text = text.replace("monitor:\n", "monitor:\n  listen: 127.0.0.1:0\n  cluster: {replica_id: r1}\n", 1)
    config = parse_config(text)

    async def probe(check: CheckConfigBase, ctx: ProbeContext) -> CheckResult:
        now = time.time()
        return CheckResult(integration=ctx.integration, check=check.name, kind="http", ok=True, error_class=None,
                           detail="", started_at=now, duration=0.0, total_duration=0.0)

    turns = Turns()
    turns.install()
    spent: dict[str, float] = {}
    compute = placement_module.Assignment.compute.__func__  # type: ignore[attr-defined]

    def timed_compute(cls: type, *args: Any, **kwargs: Any) -> Any:
        with timing(spent, "Assignment.compute"):
            return compute(cls, *args, **kwargs)

    placement_module.Assignment.compute = classmethod(timed_compute)  # type: ignore[method-assign, assignment]
    apply = replica_module.Cluster._apply

    def timed_apply(self: Any, *args: Any, **kwargs: Any) -> None:
        with timing(spent, "Cluster._apply, whole"):
            apply(self, *args, **kwargs)

    replica_module.Cluster._apply = timed_apply  # type: ignore[method-assign]
    publish = replica_module.Cluster._publish_backoff

    def timed_publish(self: Any) -> None:
        with timing(spent, "back-off published"):
            publish(self)

    replica_module.Cluster._publish_backoff = timed_publish  # type: ignore[method-assign]

    app = App(config, run_probe=probe)
    await app.start()
    # As the daemon's process runs (App.run; monitor/long_lived.py): young collections tuned, what lives frozen.
    long_lived.tune_young_collections()
    long_lived.freeze()
    keeper = asyncio.get_running_loop().create_task(long_lived.keep_frozen(lambda: app.scheduler.settled_at))
    assert app.cluster is not None and app.cluster.cluster is not None
    cluster = app.cluster.cluster
    wrapped = []
    for listener in cluster._listeners:
        def timed_listener(change: Any, listener: Callable[..., Any] = listener) -> None:
            with timing(spent, listener_name(listener)):
                listener(change)
        wrapped.append(timed_listener)
    cluster._listeners[:] = wrapped

    collections: list[tuple[float, int, int]] = []  # (seconds, generation, objects collected) of each
    began: list[float] = []

    def collected(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[:] = [time.perf_counter()]
        elif began and turns.on:
            collections.append((time.perf_counter() - began[0], info["generation"], info["collected"]))

    gc.callbacks.append(collected)
    late: list[float] = []

    async def timer() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + TICK
            await asyncio.sleep(TICK)
            late.append(loop.time() - due)

    client = redis.asyncio.Redis(port=redis_port)
    others: dict[str, asyncio.Task[None]] = {}

    async def member(name: str) -> None:
        lease = Membership(client, config.monitor.cluster.model_copy(update={"replica_id": name}),
                           fleet=lambda: cluster.fleet)
        while True:
            await lease.beat()
            await asyncio.sleep(config.monitor.cluster.heartbeat)

    def settled() -> bool:
        sync = app.scheduler._syncing
        return (sync is None or sync.done()) and set(app.scheduler._jobs) == cluster.share

    async def change(what: str, act: Callable[[], None], members: tuple[str, ...]) -> dict[str, Any]:
        spent.clear()
        turns.longest.clear()
        late.clear()
        collections.clear()
        turns.on = True
        act()
        await polled(lambda: cluster.members == members, 0.01, within=60.0)
        began = time.monotonic()
        await polled(settled, 0.01)
        matched = time.monotonic() - began
        await asyncio.sleep(AFTER)
        turns.on = False
        return {"change": what, "share": len(cluster.share), "matched_s": matched,
                "spent_ms": {k: 1000 * v for k, v in spent.items()},
                "longest_turns": [(1000 * w, 1000 * c, d) for w, c, d in turns.top()],
                "latest_wakeup_ms": 1000 * max(late, default=0.0),
                "longest_collection_ms": [(1000 * s, g, n) for s, g, n in sorted(collections, reverse=True)[:3]]}

    ticking = asyncio.get_running_loop().create_task(timer())
    await polled(lambda: settled() and time.time() >= app.scheduler.settled_at, 0.1, within=600.0)
    results = []
    try:
        results.append(await change("r2 joins", lambda: others.setdefault("r2", asyncio.create_task(member("r2"))),
                                    ("r1", "r2")))
        results.append(await change("r3 joins", lambda: others.setdefault("r3", asyncio.create_task(member("r3"))),
                                    ("r1", "r2", "r3")))
        results.append(await change("r2 crashes", lambda: others["r2"].cancel(), ("r1", "r3")))
    finally:
        ticking.cancel()
        keeper.cancel()
        for task in others.values():
            task.cancel()
        await app.close()
        await client.aclose()
    return results


def worker(checks: int, redis_port: int) -> None:
    if "PYTHONPATH" not in os.environ:
        sys.path.insert(0, str(HERE.parent))
    print(json.dumps(asyncio.run(run(checks, redis_port))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", help="another checkout: its daemon too, interleaved")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # the redis-server's port
    args = parser.parse_args()
    if args.worker:
        worker(args.checks, args.worker)
        return
    sys.path.insert(0, str(HERE))
    from replicas import private_redis

    trees = {"this checkout": None, **({"before": args.before} if args.before else {})}
    results: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            env = {**os.environ, **({"PYTHONPATH": tree} if tree else {})}
            with private_redis(False) as (port, _):
                out = subprocess.run([sys.executable, __file__, "--worker", str(port), "--checks", str(args.checks)],
                                     env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
            results[name].append(json.loads(out.stdout.splitlines()[-1]))
            for row in results[name][-1]:
                print(name, json.dumps(row), flush=True)
    print(f"\n{args.checks:,} checks, r1 alone, then r2 joins, r3 joins, r2 crashes; median (min–max) of "
          f"{args.rounds}\n")
    parts, turns = [], []
    for name, rounds in results.items():
        for i, row in enumerate(rounds[0]):
            parts += [f"| {name} | {row['change']} | {row['share']} | {part} | "
                      f"{spread([r[i]['spent_ms'].get(part, 0.0) for r in rounds], '.1f')} |"
                      for part in row["spent_ms"]]
            worst = max(rounds, key=lambda r, i=i: r[i]["latest_wakeup_ms"])[i]["longest_turns"][:3]
            turns.append(f"| {name} | {row['change']} | {spread([r[i]['matched_s'] for r in rounds], '.2f')} | "
                         f"{spread([r[i]['latest_wakeup_ms'] for r in rounds], '.0f')} | "
                         + "; ".join(f"{w:.0f} / {c:.0f} {d}" for w, c, d in worst) + " |")
    print("| tree | change | share | part of the change applied at once | CPU ms |\n|---|---|---|---|---|")
    print("\n".join(parts))
    print("\n| tree | change | jobs match after, s | latest 2 ms timer wake-up, ms | longest turns, wall / CPU ms |")
    print("|---|---|---|---|---|\n" + "\n".join(turns))

def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"

if __name__ == "__main__":
    main()
