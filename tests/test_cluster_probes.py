"""Three daemons (real processes) sharing a private redis-server act as one monitor: each check is probed
once per interval across the fleet, on its timetable, through joins, crashes, pauses and restarts.

Short heartbeats and TTLs keep these tests quick; every wait is a condition with a deadline. The target
counts every request, so "ran once" is measured where it matters, at the vendor.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fleet import Fleet, runs_on_timetable
from needs import missing
from redis_servers import OwnRedis
from targets import Target

from monitor.metrics import Metrics

HEARTBEAT = 0.3
TTL = 2.0
INTERVAL = 1.0
JITTER = 0.2
INTEGRATIONS = {"payments": 6, "crm": 4, "shipping": 2}
# A run starts up to the scheduler's wake-up slack late and a loaded machine adds more: the margin a
# measured gap may exceed the bound by, and the time a request may take to arrive after its due instant.
SLACK = 0.5


def fleet_config(target: Target, redis_url: str) -> str:
    lines = [
        "monitor:",
        f"  redis_url: {redis_url}",
        f"  jitter: {JITTER}",
        "  shutdown_grace: 5s",
        f"  cluster: {{heartbeat: {int(HEARTBEAT * 1000)}ms, ttl: {TTL:g}s}}",
        "integrations:",
    ]
    for integration, count in INTEGRATIONS.items():
        lines += [f"  {integration}:", "    checks:"]
        lines += [
            f"      - {{name: c{i}, kind: http, url: '{target.url(f'/{integration}/c{i}')}', "
            f"interval: {INTERVAL:g}s, timeout: 1s}}"
            for i in range(count)
        ]
    return "\n".join(lines) + "\n"


CHECKS = [f"{integration}/c{i}" for integration, count in INTEGRATIONS.items() for i in range(count)]


@pytest.fixture
async def fleet(
    request: pytest.FixtureRequest, tmp_path: Path, target: Target, own_redis: OwnRedis
) -> AsyncIterator[Fleet]:
    from fleet import EXE

    if not EXE.exists():
        missing(f"console script {EXE} not installed (pip install -e .)")
    await own_redis.start()
    config = tmp_path / "monitor.yaml"
    config.write_text(fleet_config(target, own_redis.url))
    fleet = Fleet(config=config, logs=tmp_path)
    request.node.process_logs = fleet.log_tail  # shown with a failure: what each replica said
    yield fleet
    await fleet.close()


def hits_of(target: Target, check: str) -> list[float]:
    return [h.wall for h in target.hits(f"/{check}")]


async def start_three(fleet: Fleet) -> None:
    await asyncio.gather(*(fleet.start(name) for name in ("r0", "r1", "r2")))
    await fleet.settled({"r0", "r1", "r2"})


async def probers(fleet: Fleet) -> dict[str, str]:
    """check → the replica that probes it, as the first running replica reports it."""
    doc = await fleet.running()[0].status()
    return {f"{i}/{c}": entry["probed_by"] for i, integ in doc["integrations"].items()
            for c, entry in integ["checks"].items()}


async def test_three_replicas_probe_each_check_once_per_interval_and_one_exports_it(
    fleet: Fleet, target: Target
) -> None:
    await start_three(fleet)
    start = time.time()
    await asyncio.sleep(8)
    end = time.time()
    await asyncio.sleep(SLACK)  # runs due just before the end still reach the target

    for check in CHECKS:
        table = runs_on_timetable(check, INTERVAL, JITTER, hits_of(target, check), start, end)
        assert table.hits == table.due, f"{check}: {table}"

    # The work is split, and every replica agrees on who does what.
    statuses = [await r.status() for r in fleet.running()]
    shares = [s["monitor"]["cluster"]["owned_checks"] for s in statuses]
    assert sum(shares) == len(CHECKS) and all(share > 0 for share in shares), shares
    owners = [{i: integ["owner"] for i, integ in s["integrations"].items()} for s in statuses]
    assert owners[0] == owners[1] == owners[2]
    assert {p for p in (await probers(fleet)).values()} == {"r0", "r1", "r2"}

    # Each check's series comes from one replica only: its integration's owner.
    exported: dict[str, list[str]] = {check: [] for check in CHECKS}
    for replica in fleet.running():
        for line in (await replica.metrics()).splitlines():
            if line.startswith("integration_probe_runs_total{") and 'outcome="success"' in line:
                labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
                exported[f"{labels['integration'].strip(chr(34))}/{labels['check'].strip(chr(34))}"].append(
                    replica.name)
    for check, where in exported.items():
        assert where == [owners[0][check.split("/")[0]]], (check, where)

    # Members in /api/status, and the cluster's own metrics on every replica: the members, its share
    # (the shares add up to every check), the moves that brought it there.
    assert {m["id"] for m in statuses[0]["monitor"]["cluster"]["members"]} == {"r0", "r1", "r2"}
    owned = 0.0
    for replica in fleet.running():
        text = await replica.metrics()
        assert "integration_monitor_cluster_members 3.0" in text
        owned += sample(text, "integration_monitor_owned_checks")
        assert sample(text, 'integration_monitor_ownership_changes_total{unit="check"}') > 0, replica.name
    assert owned == len(CHECKS)


def sample(exposition: str, series: str) -> float:
    """The value of one series (name and labels as exposed) in a /metrics text."""
    for line in exposition.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exposed")


async def test_a_killed_replicas_share_is_picked_up_within_ttl_plus_an_interval(fleet: Fleet, target: Target) -> None:
    await start_three(fleet)
    victim = (await fleet.running()[0].status())["integrations"]["payments"]["owner"]
    share = [check for check, who in (await probers(fleet)).items() if who == victim]
    assert share
    start = time.time()
    await asyncio.sleep(2)
    before = streaks(await fleet.replicas[victim].metrics(), "payments")
    await fleet.kill(victim)
    survivors = {"r0", "r1", "r2"} - {victim}
    await fleet.settled(survivors, within=TTL + 5)
    await asyncio.sleep(4)
    end = time.time()
    await asyncio.sleep(SLACK)  # runs due just before the end still reach the target

    for check in CHECKS:
        table = runs_on_timetable(check, INTERVAL, JITTER, hits_of(target, check), start, end)
        if check in share:  # one extra run at most (a catch-up), never a pause longer than TTL + interval
            assert table.longest_gap <= TTL + INTERVAL + SLACK, f"{check}: {table}"
            assert table.due - 1 <= table.hits <= table.due + 1, f"{check}: {table}"
        else:
            assert table.hits == table.due, f"{check}: {table}"
    assert {p for p in (await probers(fleet)).values()} == survivors

    # The new owner of payments continues each check's failure streak (every check here fails: 404).
    owner = (await fleet.running()[0].status())["integrations"]["payments"]["owner"]
    after = streaks(await fleet.replicas[owner].metrics(), "payments")
    assert set(after) == set(before)
    for check, count in before.items():
        assert after[check] > count + 2, (check, before, after)


def streaks(exposition: str, integration: str) -> dict[str, float]:
    """check → integration_probe_consecutive_failures of ``integration`` in one replica's /metrics."""
    out = {}
    for line in exposition.splitlines():
        if line.startswith("integration_probe_consecutive_failures{") and f'integration="{integration}"' in line:
            check = line.split('check="', 1)[1].split('"', 1)[0]
            out[check] = float(line.rsplit(" ", 1)[1])
    return out


async def test_rolling_restart_keeps_every_check_on_its_timetable(fleet: Fleet, target: Target) -> None:
    await start_three(fleet)
    start = time.time()
    handovers = 0
    for name in ("r0", "r1", "r2"):
        assert await fleet.stop(name) == 0
        others = {"r0", "r1", "r2"} - {name}
        await fleet.settled(others)
        await fleet.start(name)
        await fleet.settled({"r0", "r1", "r2"})
        handovers += 2
    end = time.time()
    await asyncio.sleep(SLACK)  # runs due just before the end still reach the target
    for check in CHECKS:
        table = runs_on_timetable(check, INTERVAL, JITTER, hits_of(target, check), start, end)
        # Announced leaves and joins switch every replica at one instant: no run doubled or skipped but
        # for one at a switch that falls right on a due run.
        assert abs(table.hits - table.due) <= handovers, f"{check}: {table}"
        assert table.longest_gap <= TTL + INTERVAL + SLACK, f"{check}: {table}"


async def test_a_paused_replica_does_not_probe_what_was_taken_over(fleet: Fleet, target: Target) -> None:
    await start_three(fleet)
    share = [check for check, who in (await probers(fleet)).items() if who == "r1"]
    fleet.replicas["r1"].signal(signal.SIGSTOP)
    await fleet.settled({"r0", "r2"}, within=TTL + 5)
    resumed = time.time()
    fleet.replicas["r1"].signal(signal.SIGCONT)
    await fleet.settled({"r0", "r1", "r2"})
    end = time.time()
    await asyncio.sleep(SLACK)  # runs due just before the end still reach the target
    for check in share:
        # r1's scheduler fires the runs it missed while stopped the moment it resumes: none may reach the
        # vendor (the others took the checks over); at most one run more than due, at the switch back.
        table = runs_on_timetable(check, INTERVAL, JITTER, hits_of(target, check), resumed, end)
        assert table.hits <= table.due + 1, f"{check}: {table}"
    log = fleet.replicas["r1"].log.read_text()
    assert "lease ran out without a failed heartbeat" in log


def test_cluster_metric_families_are_absent_without_a_cluster() -> None:
    metrics = Metrics()
    metrics.drop_cluster_families()
    text = metrics.render_text().decode()
    assert "integration_monitor_cluster_members" not in text
    assert "integration_monitor_owned_checks" not in text


async def test_redis_down_every_replica_keeps_its_share_and_takes_nothing_over(
    fleet: Fleet, target: Target, own_redis: OwnRedis
) -> None:
    await start_three(fleet)
    before = await probers(fleet)
    start = time.time()
    await own_redis.stop()
    await asyncio.sleep(TTL * 3)  # every lease in the (gone) Redis has run out meanwhile
    states = [(await r.cluster())["state"] for r in fleet.running()]
    assert all(state.startswith("degraded") for state in states), states
    await own_redis.start()  # empty: Redis kept nothing (no persistence)
    await fleet.settled({"r0", "r1", "r2"}, within=TTL * 3)
    end = time.time()
    await asyncio.sleep(SLACK)
    assert await probers(fleet) == before  # the same members: the same placement, nothing moved
    for check in CHECKS:
        table = runs_on_timetable(check, INTERVAL, JITTER, hits_of(target, check), start, end)
        # Each replica kept probing its share through the outage and the re-join; none ran another's.
        assert abs(table.hits - table.due) <= 1, f"{check}: {table}"
        assert table.longest_gap <= INTERVAL + SLACK, f"{check}: {table}"
