"""Fixtures shared by the whole suite: the misbehaving target, Redis (shared and private) and the log."""

from __future__ import annotations

import io
import logging
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import pytest
import redis.asyncio
from fake_slack import FakeSlack
from hypothesis import settings
from needs import free_port, missing
from redis_servers import SHARED_REDIS, OwnRedis, tag_of
from targets import Target

# No deadline per example: hypothesis' default (200 ms) is a timed assertion, which the suite never makes (speed
# claims live in bench/). On a loaded machine it failed test_status_entry's property once (290 ms, then
# 0.23 ms on the re-run: a pause of the machine, not of the code); 29 tests had already turned it off one by one.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


# What asyncio says of a task or connection left behind only in its log, never as a warning (pyproject's
# filterwarnings fails a test on a ResourceWarning): each is a shutdown path that did not finish its work.
LEFT_BEHIND = re.compile(
    r"Task was destroyed but it is pending|Task exception was never retrieved|Unclosed (client session|connector)"
)


class _LeftBehind(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.said: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if LEFT_BEHIND.search(message):
            self.said.append(message)


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """The test fails if asyncio logs a task or connection left behind while it runs (or while its event
    loop closes: this fixture, set up first, is torn down after the loop)."""
    left = _LeftBehind()
    logger = logging.getLogger("asyncio")
    logger.addHandler(left)
    try:
        yield
    finally:
        logger.removeHandler(left)
    assert not left.said, f"asyncio: {left.said}"


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    """A misbehaving vendor API on 127.0.0.1 (see tests/targets.py); script it with target.route()."""
    async with Target() as server:
        yield server


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed test shows what the processes it started logged: a fixture that starts some sets
    ``request.node.process_logs`` to a function returning their last lines (tests/fleet.py does)."""
    outcome = yield
    report = outcome.get_result()
    logs = getattr(item, "process_logs", None)
    if report.failed and logs is not None:
        report.sections.append(("process logs", logs()))


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """A loopback server speaking Slack's Web API (tests/fake_slack.py)."""
    fake = await FakeSlack().start()
    yield fake
    await fake.close()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own on the shared Redis, ``test:<12 hex>:``; its hex part also serves as
    a tag inside key names (``rl:<tag>:…``). Everything containing it is deleted after the test."""
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def shared_redis(prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the shared Redis at 127.0.0.1:6379 (CI starts it: a test without it fails there and
    skips elsewhere). Keys containing this test's ``prefix`` tag are deleted afterwards."""
    client = redis.asyncio.Redis.from_url(SHARED_REDIS)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        await client.aclose()
        missing(f"Redis at 127.0.0.1:6379 not reachable: {exc}")
    yield client
    keys = [key async for key in client.scan_iter(match=f"*{tag_of(prefix)}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def own_redis() -> AsyncIterator[OwnRedis]:
    """A redis-server of this test's own on a free port (never the shared one), to stop and start."""
    if shutil.which("redis-server") is None:
        missing("redis-server binary not installed (Debian package redis-server)")
    server = OwnRedis(port=free_port())
    yield server
    await server.stop()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """A stream for the daemon's own (redacting) log handler (``monitor.logs.setup_logging(…, stream=…)``).
    Afterwards the logging setup is as before: root handlers and levels, and the loggers setup_logging and
    the scheduler quieten (a leftover level or handler would change what later tests' caplog sees)."""
    root = logging.getLogger()
    quieted = [logging.getLogger(name) for name in QUIETENED_LOGGERS]
    level, handlers, levels = root.level, list(root.handlers), [logger.level for logger in quieted]
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for logger, before in zip(quieted, levels, strict=True):
        logger.setLevel(before)


# Loggers whose level the daemon sets: monitor/logs.py (setup_logging) and monitor/scheduler.py.
QUIETENED_LOGGERS = ("apscheduler", "aiohttp.access", "apscheduler.scheduler", "apscheduler.executors.default")
