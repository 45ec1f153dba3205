"""Fixtures shared by the webhook tests: the shared Redis at 127.0.0.1:6379 with a unique key prefix per
test (cleaned up afterwards), and a private redis-server for tests that stop it."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio
from needs import free_port, missing

SHARED_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> str:
    return f"test:wh:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def shared_redis(prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(SHARED_REDIS)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        await client.aclose()
        missing(f"Redis at 127.0.0.1:6379 not reachable: {exc}")
    yield client
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@dataclass
class OwnRedis:
    """A redis-server of our own on a free port, which a test may stop and start again."""

    port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        client = redis.asyncio.Redis(host="127.0.0.1", port=self.port)
        try:
            for _ in range(100):
                try:
                    await client.ping()
                    return
                except (redis.RedisError, OSError):
                    await asyncio.sleep(0.05)
            raise RuntimeError(f"redis-server on port {self.port} did not start")
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await self.process.wait()
            self.process = None


@pytest.fixture
async def own_redis() -> AsyncIterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        missing("redis-server binary not installed")
    server = OwnRedis(port=free_port())
    yield server
    await server.stop()
