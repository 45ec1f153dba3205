"""The phases of a probe from the session's own hooks (checks.timing: the resolver, the connector's
``_create_connection`` and the response's ``start``), not aiohttp's tracing: what those hooks could get
wrong — redirect hops, a connection from the pool, the stage a deadline names on a later hop, and which
attempt a hook's time goes to when attempts run at once on one session."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from hypothesis import given
from hypothesis import strategies as st
from targets import Reply, SilentServer, Target

from checks.base import ProbeContext
from checks.http import HttpCheckConfig, make_session, probe
from checks.timing import AttemptTiming, TimedConnector, TimedResolver, TimedResponse, current_attempt
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import PHASES, CheckResult


def make_check(url: str, **fields: Any) -> HttpCheckConfig:
    return HttpCheckConfig.model_validate({"name": "t", "kind": "http", "url": url, **fields})


async def run(check: HttpCheckConfig, session: aiohttp.ClientSession | None = None) -> CheckResult:
    return await probe(check, ProbeContext(integration="acme", redactor=Redactor(), session=session))


def by_name(url: str) -> str:
    return url.replace("127.0.0.1", "localhost")  # a name, so the hop has a DNS phase


async def test_every_redirect_hop_counts_in_the_phases(target: Target) -> None:
    # Three hops, each answering its headers after 0.3 s, each on a connection of its own to a name: the
    # ttfb is the three waits summed (the last hop alone would be 0.3 s), and every hop resolved.
    last = target.route("/last", Reply(delay=0.3, json={"ok": True}))
    middle = target.route("/middle", Reply(status=302, delay=0.3, headers={"Location": by_name(last)}))
    first = target.route("/first", Reply(status=307, delay=0.3, headers={"Location": by_name(middle)}))
    resolved: list[str] = []

    class CountingResolver(TimedResolver):
        async def resolve(self, host: str, *args: Any, **kwargs: Any) -> Any:
            resolved.append(host)
            return await super().resolve(host, *args, **kwargs)

    session = aiohttp.ClientSession(
        connector=TimedConnector(force_close=True, use_dns_cache=False, resolver=CountingResolver()),
        response_class=TimedResponse,
    )
    async with session:
        result = await run(make_check(by_name(first)), session)
    assert result.ok, result
    assert [len(target.hits(p)) for p in ("/first", "/middle", "/last")] == [1, 1, 1]
    assert resolved == ["localhost"] * 3
    assert result.phases["ttfb"] >= 0.85, result.phases
    assert {"dns", "connect", "ttfb", "transfer"} == set(result.phases)


async def test_a_connection_from_the_pool_has_no_connect_phase(target: Target) -> None:
    # The probes' session closes every connection (a probe measures a fresh connect), but the hooks must
    # not invent a connect for a connection that was not made: a keep-alive session reuses the first.
    url = target.url("/ok")
    timings = [AttemptTiming(), AttemptTiming()]
    session = aiohttp.ClientSession(connector=TimedConnector(), response_class=TimedResponse)
    async with session:
        for timing in timings:
            token = current_attempt.set(timing)
            try:
                async with session.get(url) as resp:
                    await resp.read()
            finally:
                current_attempt.reset(token)
    first, second = (t.phases() for t in timings)
    assert {"connect", "ttfb"} <= set(first), first
    assert "connect" not in second and "ttfb" in second, second
    assert len(target.hits("/ok")) == 2


async def test_a_deadline_on_a_later_hop_names_that_hop_s_stage(target: Target) -> None:
    # The first hop went through connect and headers; the second hop starts over: a connect that never
    # completes (TLS to a server that does not answer) is a connect timeout, a stalled answer a headers one.
    async with SilentServer() as server:
        silent = f"https://127.0.0.1:{server.port}/"
        to_silent = target.route("/to-silent", Reply(status=302, headers={"Location": silent}))
        result = await run(make_check(to_silent, timeout="600ms", connect_timeout="5s"))
    assert result.error_class is ErrorClass.TIMEOUT, result
    assert result.detail.startswith("timeout: connect did not complete within "), result.detail
    assert result.detail.endswith("(deadline)"), result.detail

    target.route("/stall", Reply(delay=5))
    to_stall = target.route("/to-stall", Reply(status=302, headers={"Location": "/stall"}))
    result = await run(make_check(to_stall, timeout="600ms"))
    assert result.error_class is ErrorClass.TIMEOUT, result
    assert result.detail.startswith("timeout: no response headers within "), result.detail
    assert len(target.hits("/stall")) == 1


async def test_attempts_at_once_on_one_session_each_get_their_own_phases(target: Target) -> None:
    # The hooks find their attempt through a context variable: an attempt that resolves a name and one that
    # does not, running together on one session, must not lend each other phases.
    slow = target.route("/slow", Reply(delay=0.6, json={"ok": True}))
    fast = target.route("/fast", Reply(json={"ok": True}))
    async with make_session(limit=0) as session:
        named, literal = await asyncio.gather(
            run(make_check(by_name(slow)), session), run(make_check(fast), session)
        )
    assert named.ok and literal.ok, (named, literal)
    assert "dns" in named.phases and "dns" not in literal.phases, (named.phases, literal.phases)
    assert named.phases["ttfb"] >= 0.55, named.phases
    assert {"connect", "ttfb", "transfer"} <= set(literal.phases)


@given(st.fixed_dictionaries({}, optional={name: st.floats(min_value=0, max_value=60) for name in PHASES}))
def test_an_attempts_phases_are_those_measured_in_phase_order(measured: dict[str, float]) -> None:
    timing = AttemptTiming()
    for name, value in measured.items():
        setattr(timing, name, value)
    phases = timing.phases()
    assert phases == measured and list(phases) == [name for name in PHASES if name in measured]
