"""Three daemons (real processes) sharing a private redis-server act as one monitor: each check is probed
once per interval across the fleet, on its timetable, through joins, crashes, pauses and restarts.

Short heartbeats and TTLs keep these tests quick; every wait is a condition with a deadline. The target
counts every request, so "ran once" is measured where it matters, at the vendor, and each request is
judged by the due run it serves (tests/fleet.py), not by the seconds between requests: how late a run
reaches the vendor is the machine's share (a loaded one adds tenths of a second), whether it runs at
all is the product's.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio
from fleet import Fleet, arrived, runs_on_timetable
from needs import missing
from redis_servers import OwnRedis
from targets import Reply, Target
from waiting import NO_ANSWER, until

from monitor.metrics import Metrics

HEARTBEAT = 0.3
TTL = 2.0
INTERVAL = 1.0
JITTER = 0.2
TIMEOUT = 1.0
INTEGRATIONS = {"payments": 6, "crm": 4, "shipping": 2}
# A run starts at most its misfire grace (its interval) late, or the scheduler skips it, then takes up to
# its timeout: how long the runs due before a window's end may take to reach the target.
ARRIVAL = INTERVAL + TIMEOUT
CATCH_UP = re.compile(r"cluster: (\d+) check\(s\) taken over with a run due since")


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
            f"interval: {INTERVAL:g}s, timeout: {TIMEOUT:g}s}}"
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


async def runs_arrived(target: Target, end: float) -> None:
    """The runs due before ``end`` have reached the target (or could no longer)."""
    await arrived(CHECKS, INTERVAL, JITTER, lambda check: hits_of(target, check), end, within=ARRIVAL)


async def start_three(fleet: Fleet, target: Target) -> None:
    """Three replicas that agree on the placement, and the runs due before that have reached the target. A
    window judged from here on counts no straggler of the start: r0, probing every check until the others
    joined, may start a run as late as its misfire grace on a loaded machine (a process just started), and
    that run, arriving after the next due instant, counted as a second run of it, due under the new owner."""
    await asyncio.gather(*(fleet.start(name) for name in ("r0", "r1", "r2")))
    await fleet.settled({"r0", "r1", "r2"})
    await runs_arrived(target, time.time())


async def probers(fleet: Fleet) -> dict[str, str]:
    """check → the replica that probes it, as the first running replica reports it."""
    doc = await fleet.running()[0].status()
    return {f"{i}/{c}": entry["probed_by"] for i, integ in doc["integrations"].items()
            for c, entry in integ["checks"].items()}


async def test_three_replicas_probe_each_check_once_per_interval_and_one_exports_it(
    fleet: Fleet, target: Target
) -> None:
    await start_three(fleet, target)
    start = time.time()
    await asyncio.sleep(8)  # the window judged: 8 s of each check's timetable (a run a second), however late it ends
    end = time.time()
    await runs_arrived(target, end)

    for check in CHECKS:
        table = runs_on_timetable(check, INTERVAL, JITTER, hits_of(target, check), start, end)
        assert table.skipped == table.doubled == 0, f"{check}: {table}"

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

    # /api/status on any replica tells where each check's results are: the owner's entry has them; every
    # other replica's entry points to the owner, at the address its member record gives (it showed a check
    # that never ran: runs 0, ok null).
    addresses = {m["id"]: m["address"] for m in statuses[0]["monitor"]["cluster"]["members"]}
    for replica, doc in zip(fleet.running(), statuses, strict=True):
        for integration, integ in doc["integrations"].items():
            owner = integ["owner"]
            assert integ["owner_address"] == addresses[owner]
            for check, entry in integ["checks"].items():
                if owner == replica.name:
                    assert entry["runs"] > 0 and entry["ok"] is not None and "results_on" not in entry, entry
                    continue
                assert "runs" not in entry and "ok" not in entry, (replica.name, entry)
                url = f"http://{addresses[owner]}/api/status/{integration}/{check}"
                assert entry["results_on"] == {"replica": owner, "address": addresses[owner], "url": url}
                async with aiohttp.ClientSession() as session, session.get(url) as resp:
                    there = await resp.json()
                assert there["check"] == check and there["runs"] > 0 and there["ok"] is not None, there


def sample(exposition: str, series: str) -> float:
    """The value of one series (name and labels as exposed) in a /metrics text."""
    for line in exposition.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exposed")


async def test_a_killed_replicas_share_is_picked_up_within_ttl_plus_an_interval(
    fleet: Fleet, target: Target, own_redis: OwnRedis
) -> None:
    await start_three(fleet, target)
    victim = (await fleet.running()[0].status())["integrations"]["payments"]["owner"]
    share = [check for check, who in (await probers(fleet)).items() if who == victim]
    assert share
    start = time.time()
    payments = {c.split("/", 1)[1] for c in CHECKS if c.startswith("payments/")}

    def failing_in_a_row(found: dict[str, int]) -> bool:  # (every check here fails: 404)
        return set(found) == payments and min(found.values()) >= 2

    await until(lambda: stored_streaks(own_redis, "payments"),
                f"{victim} to store payments' checks failing twice in a row", holds=failing_in_a_row)
    stored = await stored_streaks(own_redis, "payments")  # the victim's counts only grow from here (all fail)
    survivors = {"r0", "r1", "r2"} - {victim}
    logged = {name: fleet.replicas[name].log.stat().st_size for name in survivors}
    killed = time.time()
    await fleet.kill(victim)
    lease_end = await lease_end_of(own_redis, victim)
    await fleet.settled(survivors, within=TTL + 5)
    await asyncio.sleep(4)  # the window judged after the takeover: 4 s of each check's timetable (a run a second)
    end = time.time()
    await runs_arrived(target, end)

    for check in CHECKS:
        hits = hits_of(target, check)
        if check not in share:
            table = runs_on_timetable(check, INTERVAL, JITTER, hits, start, end)
            assert table.skipped == table.doubled == 0, f"{check}: {table}"
            continue
        # The victim's lease runs out a TTL after its last heartbeat; the others take its checks over then,
        # at the latest an interval later (their heartbeat's round trip and the run's start: the README's
        # "picked up within TTL + one interval" of the crash).
        taken = [h for h in hits if h >= lease_end]
        assert taken and taken[0] - killed <= TTL + INTERVAL, (check, killed, lease_end, taken[:1])
        # Until the victim's last run and from its new prober's first, every due run ran once. The runs due
        # between them were missed, but for the one the first makes up for (below).
        last = max(h for h in hits if h < lease_end)
        for since, upto in ((start, last), (taken[0], end)):
            table = runs_on_timetable(check, INTERVAL, JITTER, hits, since, upto)
            assert table.skipped == table.doubled == 0, f"{check} [{since - start:.2f}s, {upto - start:.2f}s): {table}"
    assert {p for p in (await probers(fleet)).values()} == survivors
    # Every check of the victim's share had a run due after the victim's last heartbeat: its new prober ran it
    # at once on taking it over (a catch-up), rather than waiting for the next one.
    caught_up = [int(n) for name, size in logged.items()
                 for n in CATCH_UP.findall(fleet.replicas[name].log.read_bytes()[size:].decode(errors="replace"))]
    assert sum(caught_up) == len(share), (caught_up, share)

    # The new owner of payments continues each check's failure streak (every check here fails: 404): its
    # count is the victim's last stored count plus the runs it recorded itself since it took payments over
    # (its run counters start then). Started afresh, the two would be equal. (The results that went to the
    # victim's stream after its last stored count are among those runs: the new owner drained them; the next
    # test counts them exactly.)
    owner = (await fleet.running()[0].status())["integrations"]["payments"]["owner"]
    exposition = await fleet.replicas[owner].metrics()
    after, runs = streaks(exposition, "payments"), per_check(exposition, "integration_probe_runs_total", "payments")
    assert set(after) == set(runs) == payments
    for check in payments:
        assert after[check] - runs[check] >= stored[check], (check, stored, after, runs)


async def lease_end_of(redis_server: OwnRedis, replica: str) -> float:
    """When ``replica``'s lease in Redis runs out (epoch seconds: its last heartbeat plus the TTL)."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        score = await client.zscore("im:cluster:members", replica)
    finally:
        await client.aclose()
    assert score is not None, f"{replica} holds no lease"
    return score / 1000


def streaks(exposition: str, integration: str) -> dict[str, float]:
    """check → integration_probe_consecutive_failures of ``integration`` in one replica's /metrics."""
    return per_check(exposition, "integration_probe_consecutive_failures", integration)


def per_check(exposition: str, family: str, integration: str) -> dict[str, float]:
    """check → the sum of ``family``'s series of ``integration`` (over their other labels) in a /metrics text."""
    out: dict[str, float] = {}
    for line in exposition.splitlines():
        if line.startswith(family + "{") and f'integration="{integration}"' in line:
            check = line.split('check="', 1)[1].split('"', 1)[0]
            out[check] = out.get(check, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def stored_streaks(redis_server: OwnRedis, integration: str) -> dict[str, int]:
    """check → the failed runs in a row that ``integration``'s owner last stored in Redis for the next owner."""
    client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        stored = await client.hgetall(f"im:cluster:streak:{integration}")
    finally:
        await client.aclose()
    return {check: int(count) for check, count in stored.items()}


async def test_rolling_restart_keeps_every_check_on_its_timetable(fleet: Fleet, target: Target) -> None:
    await start_three(fleet, target)
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
    await runs_arrived(target, end)
    for check in CHECKS:
        table = runs_on_timetable(check, INTERVAL, JITTER, hits_of(target, check), start, end)
        # Announced leaves and joins switch every replica at one instant: no run doubled or skipped but
        # for one at a switch that falls right on a due run, and never two in a row.
        assert abs(table.hits - table.due) <= handovers, f"{check}: {table}"
        assert table.longest_skip <= 1, f"{check}: {table}"


async def test_a_paused_replica_does_not_probe_what_was_taken_over(fleet: Fleet, target: Target) -> None:
    await start_three(fleet, target)
    share = [check for check, who in (await probers(fleet)).items() if who == "r1"]
    fleet.replicas["r1"].signal(signal.SIGSTOP)
    await fleet.settled({"r0", "r2"}, within=TTL + 5)
    resumed = time.time()
    fleet.replicas["r1"].signal(signal.SIGCONT)
    await fleet.settled({"r0", "r1", "r2"})
    end = time.time()
    await runs_arrived(target, end)
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
    await start_three(fleet, target)
    before = await probers(fleet)
    start = time.time()
    await own_redis.stop()
    await asyncio.sleep(TTL * 3)  # every lease in the (gone) Redis has run out meanwhile

    async def states() -> list[str]:
        return [(await r.cluster())["state"] for r in fleet.running()]

    # Each has noticed by its next heartbeat (0.3 s); on a loaded machine that heartbeat may come late.
    await until(states, "every replica degraded, Redis gone",
                holds=lambda seen: all(state.startswith("degraded") for state in seen), ignoring=NO_ANSWER)
    await own_redis.start()  # empty: Redis kept nothing (no persistence)
    # Each replica joins again (announced, a heartbeat and a half ahead) while the others keep their share
    # for a TTL: the window ends once all three are members again and that TTL is over.
    await until(lambda: rejoined(fleet), "every replica to be a member again", ignoring=NO_ANSWER)
    await asyncio.sleep(TTL)
    end = time.time()
    await runs_arrived(target, end)
    assert await probers(fleet) == before  # the same members: the same placement, nothing moved
    for check in CHECKS:
        table = runs_on_timetable(check, INTERVAL, JITTER, hits_of(target, check), start, end)
        # Each replica kept probing its share through the outage and the re-join; none ran another's.
        assert table.skipped == table.doubled == 0, f"{check}: {table}"


async def rejoined(fleet: Fleet) -> bool:
    """Every replica is a member and sees all of them active."""
    for replica in fleet.running():
        cluster = await replica.cluster()
        if cluster["state"] != "member" or {m["id"] for m in cluster["members"] if m["active"]} != set(fleet.replicas):
            return False
    return True


async def test_results_sent_to_a_killed_owner_are_counted_by_the_new_owner_exactly_once(
    fleet: Fleet, target: Target, own_redis: OwnRedis
) -> None:
    # Every check answers 200, then the victim's integrations' checks 404 from T0 until T1, then 200 again:
    # the 404s are exactly the requests the target served in between, and every one of them is a failed run
    # that some owner must count once, whoever probed it and whatever stream its result was in at the kill.
    for check in CHECKS:
        target.route(f"/{check}", Reply(body="ok"))
    await start_three(fleet, target)
    owners = {i: entry["owner"] for i, entry in (await fleet.running()[0].status())["integrations"].items()}
    victim = owners["payments"]
    theirs = sorted(c for c in CHECKS if owners[c.split("/")[0]] == victim)
    share = {check for check, who in (await probers(fleet)).items() if who == victim}
    assert set(theirs) - share, "every check of the victim's integrations is probed by the victim"
    before = {check: len(target.hits(f"/{check}")) for check in theirs}
    for check in theirs:
        target.route(f"/{check}", Reply(status=404))

    async def failing_in_a_row() -> bool:
        found = {i: await stored_streaks(own_redis, i) for i in {c.split("/")[0] for c in theirs}}
        return all(found[c.split("/")[0]].get(c.split("/")[1], 0) >= 2 for c in theirs)

    await until(failing_in_a_row, f"{victim} to store its checks failing twice in a row", ignoring=NO_ANSWER)
    await fleet.kill(victim)
    await lease_end_of(own_redis, victim)
    # What the victim counted and wrote for the next owner: nobody writes these until its lease runs out.
    stored = {i: await stored_streaks(own_redis, i) for i in {c.split("/")[0] for c in theirs}}
    survivors = {"r0", "r1", "r2"} - {victim}
    await fleet.settled(survivors, within=TTL + 5)
    settled = time.time()
    await until(lambda: {c: sum(h >= settled for h in hits_of(target, c)) for c in theirs},
                "two runs of every check after the takeover", holds=lambda runs: min(runs.values()) >= 2)
    after = {check: len(target.hits(f"/{check}")) for check in theirs}
    for check in theirs:
        target.route(f"/{check}", Reply(body="ok"))
    new_owners = {i: entry["owner"] for i, entry in (await fleet.running()[0].status())["integrations"].items()}

    async def recovered() -> bool:  # each check's next (healthy) run reached its new owner: nothing older is on the way
        for check in theirs:
            integration, name = check.split("/")
            exposition = await fleet.replicas[new_owners[integration]].metrics()
            ok = outcome_runs(exposition, integration, "success")
            if ok.get(name, 0) < 1 or streaks(exposition, integration).get(name) != 0:
                return False
        return True

    await until(recovered, "every check to succeed again at its new owner", ignoring=NO_ANSWER)
    for check in theirs:
        integration, name = check.split("/")
        failed = outcome_runs(await fleet.replicas[new_owners[integration]].metrics(), integration, "failure")
        counted = stored[integration].get(name, 0) + failed.get(name, 0)
        served = after[check] - before[check]
        if check in share:
            # Probed by the victim until the kill: the runs it recorded itself after its last write of the
            # counts died with it; nothing is counted twice.
            assert counted <= served, (check, stored, failed, served)
        else:
            assert counted == served, (check, stored, failed, served)
    # They came from the victim's stream, which then expires on its own (bounded memory).
    series = 'integration_monitor_cluster_results_total{path="recovered"}'
    heirs = {new_owners[check.split("/")[0]] for check in theirs}
    recovered = [sample(await fleet.replicas[name].metrics(), series) for name in heirs]
    assert sum(recovered) > 0, recovered
    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        assert await client.pttl(f"im:cluster:results:{victim}") > 0
    finally:
        await client.aclose()


def outcome_runs(exposition: str, integration: str, outcome: str) -> dict[str, float]:
    """check → integration_probe_runs_total of ``integration`` with ``outcome`` in one replica's /metrics."""
    out: dict[str, float] = {}
    for line in exposition.splitlines():
        if (line.startswith("integration_probe_runs_total{") and f'integration="{integration}"' in line
                and f'outcome="{outcome}"' in line):
            out[line.split('check="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out
