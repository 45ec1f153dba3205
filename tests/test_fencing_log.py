"""The fencing log lines stay short however many shards a replica takes (at 500 integrations the whole
list made a ~15 kB line at each start and change of ownership): a count and a sample at INFO, all at DEBUG."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio

from alerts.fencing import LOGGED_SHARDS, Fences


async def test_taking_many_shards_logs_a_count_and_a_sample(
    shared_redis: redis.asyncio.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    shards = [f"vendor{i:03}" for i in range(500)]
    with caplog.at_level(logging.DEBUG, logger="alerts.fencing"):
        assert await Fences(shared_redis, prefix).acquire(shards)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1 and len(info[0]) < 400, info
    assert info[0].startswith("fencing tokens taken for 500 shards: vendor000=")
    assert info[0].endswith(f"… and {500 - LOGGED_SHARDS} more")
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert all(f"{s}=" in debug[0] for s in shards)
