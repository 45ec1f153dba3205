"""Shared by the daemon tests (app, server, cli, alertmanager): a config with canary secrets against a local
target, small helpers to read the daemon's endpoints, and the real daemon as a subprocess."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from needs import missing
from prometheus_client.parser import text_string_to_metric_families
from redis_servers import SHARED_REDIS
from targets import Reply, Target, closed_port
from waiting import until

# Secrets that must never leave the process: one in a header, one in a query parameter, one inline in
# the URL, one in the Slack token. Each is also echoed back by the failing endpoint's body.
CANARY_HEADER = "sk_live_CANARY_header_4f9a2c"
CANARY_QUERY = "qtok_CANARY_query_77b1e0"
CANARY_URL = "utok_CANARY_inline_a1d3"
CANARY_SLACK = "xoxb-CANARY-slack-9e8d"
CANARIES = (CANARY_HEADER, CANARY_QUERY, CANARY_URL, CANARY_SLACK)


def route_target(target: Target) -> None:
    """/ok answers the default JSON document; /broken is a 500 whose body leaks the secrets back."""
    target.route(
        "/broken",
        Reply(status=500, body=f"internal error; you sent {CANARY_HEADER} and {CANARY_QUERY} and {CANARY_URL}"),
    )


def daemon_config(target: Target, *, listen: str = "127.0.0.1:0", interval: str = "200ms", extra: str = "") -> str:
    return f"""
monitor:
  listen: "{listen}"
  jitter: 0
  shutdown_grace: 2s
integrations:
  shop:
    runbook_url: https://wiki.example.com/runbooks/shop
    checks:
      - name: ok
        kind: http
        url: "{target.url('/ok')}"
        headers: {{Authorization: "Bearer {CANARY_HEADER}"}}
        query: {{api_key: "{CANARY_QUERY}"}}
        interval: {interval}
        timeout: 2s
        expect: {{status: [200], json: {{"$.data.id": {{type: string}}}}}}
      - name: broken
        kind: http
        url: "{target.url('/broken')}?token={CANARY_URL}"
        headers: {{Authorization: "Bearer {CANARY_HEADER}"}}
        interval: {interval}
        timeout: 2s
        retry: {{attempts: 2, backoff: 10ms, max_backoff: 10ms}}
{extra}
alerting:
  slack: {{token: "{CANARY_SLACK}", channel: "#alerts", base_url: "http://127.0.0.1:{closed_port()}/api/"}}
"""


def on_shared_redis(config: str, prefix: str, monitor: str = "") -> str:
    """A ``daemon_config`` on the shared Redis with alert state and cluster membership under the test's own
    ``prefix`` (the shared_redis fixture deletes them): with the defaults, any daemon there is a peer, and
    its failing check's incident outlives the test for the next daemon to adopt (and post to Slack).
    ``monitor``: more lines of the monitor section."""
    redis = f"  redis_url: {SHARED_REDIS}\n  cluster: {{key_prefix: '{prefix}cluster:'}}\n"
    config = config.replace("monitor:\n", f"monitor:\n{redis}{monitor}", 1)
    return config.replace("alerting:\n", f"alerting:\n  key_prefix: '{prefix}alerts:'\n", 1)


def assert_no_canary(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"secret {canary} leaked into {where}"


async def get(url: str, *, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; raises on connection errors."""
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse Prometheus text into {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def evaluations(daemon: Any) -> list[float]:
    """The clock time at the end of each alert evaluation completed from now on by ``daemon``: an alert
    engine, or an in-process App (started) and its engine. A test waits for the engine to have judged what
    happened, not for a guessed time."""
    engine = next(c for c in daemon.components if c.name == "alerts") if hasattr(daemon, "components") else daemon
    done: list[float] = []
    evaluate = engine.evaluate

    async def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return await evaluate(*args, **kwargs)
        finally:
            done.append(engine.now())

    engine.evaluate = counted  # (the engine's loop calls self.evaluate: this instance's)
    return done


def runs(app: Any, integration: str, check: str) -> int:
    """How many runs of a check an in-process App has recorded (0 before the first)."""
    status = app.status_store.get(integration, check)
    return 0 if status is None else int(status.runs)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


EXE = Path(sys.executable).parent / "integration-monitor"
UP_WITHIN = 60.0  # seconds a started daemon has to answer /healthz (see until_up)


def need_console_script() -> None:
    if not EXE.exists():
        missing(f"console script {EXE} not installed (pip install -e .)")


class Daemon:
    """``integration-monitor run`` in a subprocess; its log (stderr) goes to a file, so a chatty daemon can
    never block on a full pipe."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, log_file: tempfile._TemporaryFileWrapper[bytes]):
        self.proc = proc
        self.url = url
        self._log_file = log_file
        self._kept: bytes | None = None  # the log as it was when the file went away

    async def finish(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        await asyncio.wait_for(self.proc.wait(), 20)
        assert self.proc.returncode is not None
        return self.proc.returncode

    @property
    def stderr(self) -> bytes:
        return self._kept if self._kept is not None else Path(self._log_file.name).read_bytes()

    @property
    def log(self) -> str:
        return self.stderr.decode(errors="replace")


# The daemon's own line once it listens (monitor/server.py): the port it was given, or the one the system
# picked for ":0".
_SERVING = re.compile(r"serving /metrics /healthz /readyz /api/status on 127\.0\.0\.1:(\d+)")


@asynccontextmanager
async def daemon(config: Path, *args: str) -> AsyncIterator[Daemon]:
    """The daemon listens on a port the system picks (``--listen 127.0.0.1:0``) and says which: a port
    found free beforehand and handed over could be taken by another process before the daemon bound it
    (seen: EADDRINUSE in a loaded full suite)."""
    with tempfile.NamedTemporaryFile(prefix="im-daemon-", suffix=".log") as log_file:
        proc = await asyncio.create_subprocess_exec(
            str(EXE), "run", "-c", str(config), "--listen", "127.0.0.1:0", *args,
            stdout=asyncio.subprocess.DEVNULL, stderr=log_file,
        )
        d = Daemon(proc, "", log_file)
        try:
            await until_up(d)
            yield d
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            d._kept = d.stderr


async def until_up(d: Daemon) -> None:
    async def healthy() -> bool:
        assert d.proc.returncode is None, f"daemon exited early (code {d.proc.returncode})"
        if not d.url:
            serving = _SERVING.search(d.log)
            if serving is None:
                return False
            d.url = f"http://127.0.0.1:{serving[1]}"
        try:
            return (await get(f"{d.url}/healthz"))[0] == 200
        except OSError:
            return False

    # How fast the daemon starts is not what these tests claim (a speed claim lives in bench/): the limit
    # only turns a hang into a failure. 20 s once ran out in a full suite at load 13 on 2 cores (alone,
    # at load 11, the same daemon answered in 2-5 s); the failure now shows what the daemon had logged.
    try:
        await until(healthy, "the daemon to answer /healthz", within=UP_WITHIN)
    except AssertionError as failure:
        raise AssertionError(f"{failure}; its log:\n{d.log[-3000:]}") from None
