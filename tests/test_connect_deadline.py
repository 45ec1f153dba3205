"""The probes' connector keeps aiohttp's connect timeout on a shared timer (checks.timing.TimedConnector):
each case runs against the probes' connector and aiohttp's own, which must behave alike — the same error
class out of the session, no earlier than the same instant (aiohttp rounds a limit above its
``ceil_threshold`` up to a whole second of the loop's clock), and no limit left once connected."""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp
import pytest
from targets import Reply, SilentServer, Target

from checks.timing import TimedConnector

CONNECTORS = {"probes' connector": TimedConnector, "aiohttp's": aiohttp.TCPConnector}


def session_of(connector: type[aiohttp.TCPConnector]) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=connector(force_close=True, limit=0))


async def fails_to_connect(connector: type[aiohttp.TCPConnector], limits: aiohttp.ClientTimeout) -> float:
    """Seconds of the loop's clock from the request to the ConnectionTimeoutError (TLS to a server that
    never answers: the TCP connect succeeds, the connection is never made)."""
    loop = asyncio.get_running_loop()
    async with SilentServer() as server, session_of(connector) as session:
        started = loop.time()
        with pytest.raises(aiohttp.ConnectionTimeoutError):
            await session.get(f"https://127.0.0.1:{server.port}/", timeout=limits)
        return loop.time() - started


@pytest.mark.parametrize("connector", CONNECTORS.values(), ids=CONNECTORS.keys())
async def test_a_connect_that_does_not_complete_is_aiohttps_connection_timeout(
    connector: type[aiohttp.TCPConnector],
) -> None:
    # The connect's limit, not the total: fails_to_connect expects ConnectionTimeoutError, which aiohttp's
    # session raises for the connect's limit alone (the total's is a bare TimeoutError, asserted below).
    took = await fails_to_connect(connector, aiohttp.ClientTimeout(total=10, connect=0.3))
    assert took >= 0.3


@pytest.mark.parametrize("connector", CONNECTORS.values(), ids=CONNECTORS.keys())
async def test_a_total_limit_during_the_connect_is_not_a_connection_timeout(
    connector: type[aiohttp.TCPConnector],
) -> None:
    # What tells the two limits apart above: the total's expiry is a bare TimeoutError.
    async with SilentServer() as server, session_of(connector) as session:
        with pytest.raises(TimeoutError) as raised:
            await session.get(f"https://127.0.0.1:{server.port}/", timeout=aiohttp.ClientTimeout(total=0.3))
    assert not isinstance(raised.value, aiohttp.ConnectionTimeoutError)


@pytest.mark.parametrize("connector", CONNECTORS.values(), ids=CONNECTORS.keys())
async def test_a_limit_past_the_ceil_threshold_ends_on_a_whole_second(connector: type[aiohttp.TCPConnector]) -> None:
    # 0.3 s past a threshold of 0.1 s: the limit is the next whole second of the loop's clock after
    # request + 0.3 s. Started just after a whole second, that is ~0.9 s later, not 0.3 s.
    loop = asyncio.get_running_loop()
    await asyncio.sleep(math.ceil(loop.time()) - loop.time() + 0.001)
    rounded = math.ceil(loop.time() + 0.3) - loop.time()
    took = await fails_to_connect(connector, aiohttp.ClientTimeout(total=10, connect=0.3, ceil_threshold=0.1))
    assert took >= rounded - 0.05, (took, rounded)  # (less the SilentServer's start, well under 50 ms)


@pytest.mark.parametrize("connector", CONNECTORS.values(), ids=CONNECTORS.keys())
async def test_the_connect_limit_ends_with_the_connection(
    connector: type[aiohttp.TCPConnector], target: Target,
) -> None:
    # Headers after three times the connect limit: the request still succeeds.
    url = target.route("/slow-headers", Reply(delay=0.9))
    async with session_of(connector) as session:
        started = time.monotonic()
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10, connect=0.3)) as resp:
            assert resp.status == 200
        assert time.monotonic() - started >= 0.85
