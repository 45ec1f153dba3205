"""The Redis servers tests use: the shared one at 127.0.0.1:6379 (each test under a unique key prefix, see
the ``shared_redis`` and ``prefix`` fixtures in conftest.py) and private redis-servers on free ports that a
test may stop and start (``OwnRedis``, the ``own_redis`` fixture)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

import redis.asyncio

SHARED_REDIS = "redis://127.0.0.1:6379/0"


def tag_of(prefix: str) -> str:
    """The unique part of a test's ``prefix`` (``test:<tag>:``), for key names that carry it inside."""
    return prefix.split(":")[1]


@dataclass
class OwnRedis:
    """A redis-server of our own on a free port, which a test may stop and start again."""

    port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, *options: str) -> None:
        """Start it (again, on the same port); ``options`` are more redis-server arguments (e.g. ACL users)."""
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *options,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        client = redis.asyncio.Redis(host="127.0.0.1", port=self.port)
        try:
            for _ in range(100):
                try:
                    await client.ping()
                    return
                except (redis.AuthenticationError, redis.ResponseError):
                    return  # it answers (this client may not log in: ACL users given in options)
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
