"""The Redis servers tests use: the shared one at 127.0.0.1:6379 (each test under a unique key prefix, see
the ``shared_redis`` and ``prefix`` fixtures in conftest.py) and private redis-servers on free ports that a
test may stop and start (``OwnRedis``, the ``own_redis`` fixture)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

import redis.asyncio
from waiting import until

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
        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except (redis.AuthenticationError, redis.ResponseError):
                return True  # it answers (this client may not log in: ACL users given in options)

        try:
            await until(answers, f"redis-server on port {self.port} to answer", ignoring=(redis.RedisError, OSError))
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await self.process.wait()
            self.process = None


class ReplyHoldingProxy:
    """A TCP proxy in front of a redis-server that passes every command on at once but, after ``hold(name)``,
    keeps back the replies on a connection that sent the command ``name``: to the client such a command
    times out, yet Redis has run it (the ambiguous failure of a command whose reply was lost). Other
    connections (and their handshakes) are not held. ``release()`` lets the replies through."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._holding: bytes | None = None
        self._gates: list[asyncio.Event] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def hold(self, command: str) -> None:
        self._holding = command.upper().encode()

    def release(self) -> None:
        self._holding = None
        for gate in self._gates:
            gate.set()
        self._gates.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers |= {writer, up_writer}
        gate = asyncio.Event()
        gate.set()
        await asyncio.gather(self._pump(reader, up_writer, gate, commands=True),
                             self._pump(up_reader, writer, gate, commands=False))

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, gate: asyncio.Event, *,
                    commands: bool) -> None:
        try:
            while data := await source.read(65536):
                if commands and self._holding is not None and self._holding in data.upper():
                    gate.clear()  # before Redis can answer: the reply is held back
                    self._gates.append(gate)
                if not commands:
                    await gate.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()
            self._writers.discard(sink)

    async def close(self) -> None:
        self.release()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
