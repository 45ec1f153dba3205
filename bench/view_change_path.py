"""What a cluster's view change asks of a replica's event loop in one go, in instructions (callgrind): the
instant a change takes effect (``Cluster._apply``: the placement, the change worked out, the listeners — the
scheduler's reshard, which starts a task; the recorder's series of the integrations that moved away) and each
slice of the work that a change hands to tasks (the placement worked out ahead, the series forgotten).

``--checks`` checks of scale.py's shape (100 an integration); a replica ``r1`` with a series and a status for
every check (one result recorded each, as the owner of them all), then ``r2`` joins (announced), ``r3`` joins,
``r2`` crashes (its lease runs out). The scheduler is a stand-in (its share in slices is measured by
takeover_turns.py); the alert engine is not built (bench/view_change.py times it in a whole daemon).
Deterministic: what the change saves, on any machine.

``--before TREE``: another checkout in the same run (its change in one go: every step at the instant).
Usage: python bench/view_change_path.py [--checks 50000] [--before TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NOW = 1_000_000.0


class Scheduler:
    """The scheduler as the cluster's listener asks it: ``reshard`` starts its task (not measured here)."""

    def reshard(self) -> None:
        return None


def worker(checks: int) -> None:
    sys.path.insert(0, str(HERE))
    import redis.asyncio
    from callgrind import step, step_done, steps_over
    from replicas import config_text

    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult
    from monitor.cluster.replica import Cluster
    from monitor.cluster.view import Member
    from monitor.cluster_runtime import ClusterRuntime
    from monitor.metrics import Metrics
    from monitor.recorder import Recorder
    from monitor.settings import parse_config
    from monitor.status import StatusStore

    config = parse_config(config_text("http://127.0.0.1:9/ok", checks, "redis://127.0.0.1:1/0")
                          .replace("monitor:\n", "monitor:\n  cluster: {replica_id: r1}\n", 1))
    metrics = Metrics()
    recorder = Recorder(metrics, Redactor([]), StatusStore())
    for integration, check in config.iter_checks():
        recorder.record(CheckResult(integration=integration, check=check.name, kind="http", ok=True, error_class=None,
                                    detail="", started_at=NOW, duration=0.01, total_duration=0.01))
    cluster = Cluster(config, redis=redis.asyncio.Redis(host="127.0.0.1", port=1), metrics=metrics,
                      clock=lambda: NOW)
    runtime = ClusterRuntime(config, cluster, cluster=cluster)
    cluster.on_change(runtime._changed(Scheduler(), recorder))  # type: ignore[arg-type]

    def member(name: str, active_at: float = 0.0, expires_at: float = NOW + 100) -> Member:
        return Member(id=name, incarnation=name, joined_at=0.0, active_at=active_at, expires_at=expires_at,
                      fleet=cluster.fleet)

    async def sliced(name: str, task: asyncio.Task[Any] | None) -> None:
        """Every slice of a task the change started, one counted step each."""
        if task is None:
            return
        while not task.done():
            step(name)
            await asyncio.sleep(0)  # (one turn: the task's next slice)
            step_done(1)

    async def change(name: str, records: tuple[Member, ...], at: float) -> None:
        cluster._records = records
        anticipate = getattr(cluster, "_anticipate", None)
        if anticipate is not None:  # (this checkout: the placement worked out ahead)
            anticipate(at - 2.0)
            await sliced(f"{name}: placement worked out ahead, a slice", cluster._ahead_task)
        step(f"{name}: at the instant")
        cluster._apply(at)
        step_done(len(cluster.share))
        await sliced(f"{name}: series forgotten, a slice", getattr(runtime, "_forgetting", None))

    async def steps() -> None:
        cluster._records = (member("r1"),)
        cluster._apply(NOW, members=("r1",))
        r1, r2, r3 = member("r1"), member("r2"), member("r3")
        await change("r2 joins", (r1, member("r2", active_at=NOW + 3)), NOW + 3.01)
        await change("r3 joins", (r1, r2, member("r3", active_at=NOW + 6)), NOW + 6.01)
        await change("r2 crashes", (r1, member("r2", expires_at=NOW + 9), r3), NOW + 9.01)
        steps_over()

    asyncio.run(steps())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=50_000)
    parser.add_argument("--before", help="another checkout: its change too, in the same run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.checks)
        return
    sys.path.insert(0, str(HERE))
    from callgrind import drive_trees

    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--checks", str(args.checks)]
    started = time.monotonic()
    runs = drive_trees(argv, args.before, instrument_from_start=False)
    print(f"\n{args.checks:,} checks, r1 alone, then r2 joins, r3 joins, r2 crashes; M instructions (callgrind), "
          f"{time.monotonic() - started:.0f} s\n")
    print("| tree | step | steps | M instructions, the longest | M instructions, all |")
    print("|---|---|---|---|---|")
    for suffix, counts in runs:
        for name, samples in counts.items():
            each = [c[0] for c, _ in samples]
            print(f"| {'before' if suffix else 'this checkout'} | {name} | {len(each)} | {max(each) / 1e6:.1f} | "
                  f"{sum(each) / 1e6:.1f} |")


if __name__ == "__main__":
    main()
