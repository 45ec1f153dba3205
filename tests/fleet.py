"""Several daemons as real processes sharing one Redis (issue 10): start, signal, read their endpoints,
and judge a check's runs against its timetable.

``Fleet`` starts ``integration-monitor run`` processes with one config and their own replica ids, on free
ports, each logging to a file in the test's tmp_path (shown when a test fails); every process is killed
when the test ends, whatever happened. ``runs_on_timetable`` maps the hits a target recorded for a check
onto the check's timetable (monitor/cluster/grid.py) to count, per due run, how often it ran; ``arrived``
waits for the runs due before a window's end to reach the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from needs import free_port, missing
from waiting import NO_ANSWER, until

from monitor.cluster.grid import GridTrigger

if TYPE_CHECKING:
    import pytest
    from redis_servers import OwnRedis

EXE = Path(sys.executable).parent / "integration-monitor"


@dataclass
class Replica:
    name: str
    port: int
    log: Path
    proc: asyncio.subprocess.Process | None = None
    stopped: bool = False  # SIGSTOPped

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            self.stopped = True
        elif sig == signal.SIGCONT:
            self.stopped = False

    async def status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/api/status") as resp:
            doc: dict[str, Any] = await resp.json()
            return doc

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/metrics") as resp:
            return await resp.text()

    async def cluster(self) -> dict[str, Any]:
        cluster: dict[str, Any] = (await self.status())["monitor"]["cluster"]
        return cluster


@dataclass
class Fleet:
    config: Path
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, Replica] = field(default_factory=dict)

    async def start(self, name: str) -> Replica:
        replica = self.replicas.get(name)
        if replica is None:
            replica = self.replicas[name] = Replica(name, free_port(), self.logs / f"{name}.log")
        env = {**os.environ, **self.env, "IM_MONITOR__CLUSTER__REPLICA_ID": name}
        with replica.log.open("ab") as log:
            replica.proc = await asyncio.create_subprocess_exec(
                str(EXE), "run", "-c", str(self.config), "--listen", f"127.0.0.1:{replica.port}",
                env=env, stdout=log, stderr=log,
            )
        await until(lambda: _healthy(replica), f"{name} to come up")
        return replica

    async def stop(self, name: str, within: float = 20.0) -> int:
        """SIGTERM and wait for the exit code."""
        replica = self.replicas[name]
        assert replica.proc is not None
        if replica.stopped:
            replica.signal(signal.SIGCONT)
        replica.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(replica.proc.wait(), within)

    async def kill(self, name: str) -> None:
        replica = self.replicas[name]
        assert replica.proc is not None
        replica.proc.kill()
        await replica.proc.wait()

    def running(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.running and not r.stopped]

    async def settled(self, members: set[str], within: float = 30.0) -> None:
        """Every running replica sees exactly ``members`` holding a share."""

        async def agreed() -> bool:
            views = [set((await r.cluster())["view"]) for r in self.running()]
            return bool(views) and all(view == members for view in views)

        await until(agreed, f"every replica to see {sorted(members)}", within=within, ignoring=NO_ANSWER)

    async def evaluated(self, times: int, within: float = 30.0) -> None:
        """Every running replica completes ``times`` more full alert evaluations (counted from now), then has
        nothing left in its notifiers' queues: what those evaluations had to say has been said. A test that
        asserts something was not posted asserts it after this, not after a guessed time."""
        replicas = self.running()
        start = {r.name: (await r.status())["components"]["alerts"]["alerts"]["evaluations"] for r in replicas}

        async def done() -> bool:
            for replica in replicas:
                components = (await replica.status())["components"]
                if components["alerts"]["alerts"]["evaluations"] < start[replica.name] + times:
                    return False
                if any(lane["queued"] for lane in components["notifiers"]["notifiers"].values()):
                    return False
            return True

        await until(done, f"{times} more alert evaluations on {sorted(start)}, their notifications sent", within=within,
                    ignoring=NO_ANSWER)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for replica in self.replicas.values():
            text = replica.log.read_text(errors="replace").splitlines() if replica.log.exists() else []
            out.append(f"--- {replica.name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    async def close(self) -> None:
        for replica in self.replicas.values():
            if replica.proc is not None and replica.proc.returncode is None:
                if replica.stopped:
                    replica.proc.send_signal(signal.SIGCONT)
                replica.proc.kill()
                await replica.proc.wait()


@contextlib.asynccontextmanager
async def fleet_on(redis_server: OwnRedis, config: str, request: pytest.FixtureRequest, logs: Path
                   ) -> AsyncIterator[Fleet]:
    """A fleet (no replica started yet) with ``config`` on the test's own ``redis_server``, started here; what
    each replica said is shown with a failure, and every process is killed at the end."""
    if not EXE.exists():
        missing(f"console script {EXE} not installed (pip install -e .)")
    await redis_server.start()
    path = logs / "monitor.yaml"
    path.write_text(config)
    fleet = Fleet(config=path, logs=logs)
    request.node.process_logs = fleet.log_tail  # shown with a failure: what each replica said
    try:
        yield fleet
    finally:
        await fleet.close()


async def _healthy(replica: Replica) -> bool:
    assert replica.proc is not None
    assert replica.proc.returncode is None, f"{replica.name} exited with {replica.proc.returncode}"
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{replica.url}/healthz") as resp:
            return resp.status == 200
    except (aiohttp.ClientError, OSError):
        return False


@dataclass(frozen=True)
class Timetable:
    """How a check's hits fell on its timetable between two instants (epoch seconds)."""

    due: int  # runs due in the window
    hits: int  # requests that reached the target in the window
    longest_gap: float  # seconds between two consecutive hits (the window's edges included)
    skipped: int = 0  # due runs no request served
    doubled: int = 0  # requests beyond the first for one due run
    longest_skip: int = 0  # the most due runs in a row that no request served
    latest: float = 0.0  # the longest a request arrived after the run it served was due (seconds)


def runs_on_timetable(check_id: str, interval: float, jitter: float, hits: list[float], start: float,
                      end: float) -> Timetable:
    """``hits``: arrival times (wall clock) of the check's requests. Each hit counts for the due instant
    it follows (a request arrives a little after its run was due; a catch-up run after a crash counts
    for the run it makes up for); the window counts runs due in [start, end) and the hits that belong
    to them, and which due runs got none or more than one."""
    grid = GridTrigger(check_id, interval, jitter)
    due, t = [], grid.next_after(start - 1e-9)
    while t < end:
        due.append(t)
        t = grid.next_after(t)
    served = Counter(grid.previous(h) for h in hits if start <= grid.previous(h) < end)
    inside = sorted(h for h in hits if start <= grid.previous(h) < end)
    edges = [start, *inside, end]
    return Timetable(
        due=len(due), hits=len(inside), longest_gap=max(b - a for a, b in itertools.pairwise(edges)),
        skipped=sum(1 for t in due if not served[t]), doubled=sum(n - 1 for n in served.values()),
        longest_skip=max((len(list(run)) for unserved, run in itertools.groupby(due, lambda t: not served[t])
                          if unserved), default=0),
        latest=max((h - grid.previous(h) for h in inside), default=0.0),
    )


async def arrived(check_ids: list[str], interval: float, jitter: float, hits: Callable[[str], list[float]],
                  end: float, within: float) -> None:
    """Wait until each check's last run due before ``end`` has reached the target — a run starts at most
    its misfire grace (its interval) late, else the scheduler skips it, and then takes up to its timeout —
    or ``within`` seconds have passed (a skipped run is for the caller's assertions to report)."""
    last = {check: GridTrigger(check, interval, jitter).previous(end - 1e-9) for check in check_ids}

    def not_arrived() -> list[str]:
        return [check for check in check_ids if not any(h >= last[check] for h in hits(check))]

    with contextlib.suppress(AssertionError):  # a run that never came is the caller's to name
        await until(not_arrived, "each check's last run due", holds=lambda late: not late, within=within)
