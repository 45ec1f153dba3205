"""The scheduler with a scripted probe runner (no network): jobs run, never overlap, respect the global
concurrency limit, measure lag, follow reloads and the interval-factor hook, and drain on stop."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from apscheduler.schedulers.base import STATE_PAUSED
from waiting import until

from checks.base import CheckConfigBase, ProbeContext
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor import job_sync
from monitor import scheduler as scheduler_module
from monitor.metrics import Metrics
from monitor.scheduler import Scheduler
from monitor.settings import Config, parse_config


def config(checks: dict[str, list[tuple[str, str]]], *, max_concurrency: int = 64, jitter: float = 0.0) -> Config:
    """{integration: [(check, interval)]} → Config with http checks (the runner never touches the URL)."""
    lines = [f"monitor: {{max_concurrency: {max_concurrency}, jitter: {jitter}, shutdown_grace: 1s}}", "integrations:"]
    for integration, entries in checks.items():
        lines.append(f"  {integration}:\n    checks:")
        for name, interval in entries:
            lines.append(
                f"      - {{name: {name}, kind: http, url: 'http://127.0.0.1:9/', interval: {interval}, timeout: 1s}}"
            )
    return parse_config("\n".join(lines), env={})


def result_for(check: CheckConfigBase, ctx: ProbeContext, ok: bool = True) -> CheckResult:
    return CheckResult(
        integration=ctx.integration, check=check.name, kind="http", ok=ok, error_class=None, detail="",
        started_at=time.time(), duration=0.001, total_duration=0.001,
    )


class Runner:
    """A fake probe: sleeps ``delay``, tracks concurrency overall and per check."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.active: Counter[str] = Counter()
        self.max_active: Counter[str] = Counter()
        self.total_active = 0
        self.max_total = 0
        self.finished = 0

    async def __call__(self, check: CheckConfigBase, ctx: ProbeContext) -> CheckResult:
        key = f"{ctx.integration}/{check.name}"
        self.calls[key] += 1
        self.active[key] += 1
        self.total_active += 1
        self.max_active[key] = max(self.max_active[key], self.active[key])
        self.max_total = max(self.max_total, self.total_active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active[key] -= 1
            self.total_active -= 1
        self.finished += 1
        return result_for(check, ctx)


def make(cfg: Config, runner: Callable[[CheckConfigBase, ProbeContext], Awaitable[CheckResult]],
         metrics: Metrics | None = None) -> tuple[Scheduler, list[CheckResult], list[tuple[str, str]]]:
    recorded: list[CheckResult] = []
    removed: list[tuple[str, str]] = []
    sched = Scheduler(
        cfg, metrics=metrics or Metrics(), redactor=Redactor(), record=recorded.append, run_probe=runner,
        on_removed=lambda i, c: removed.append((i, c)),
    )
    return sched, recorded, removed


def lag_count(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("integration_monitor_scheduler_lag_seconds_count") or 0.0


async def test_every_check_runs_repeatedly_and_lag_is_observed() -> None:
    metrics = Metrics()
    runner = Runner()
    sched, recorded, _ = make(config({"a": [("one", "100ms"), ("two", "150ms")], "b": [("x", "100ms")]}), runner,
                              metrics)
    sched.start()
    try:
        await until(lambda: dict(runner.calls), "3 runs each of a/one, a/two and b/x",
                    holds=lambda calls: all(calls.get(k, 0) >= 3 for k in ("a/one", "a/two", "b/x")))
    finally:
        await sched.stop(1.0)
    assert {(r.integration, r.check) for r in recorded} == {("a", "one"), ("a", "two"), ("b", "x")}
    assert lag_count(metrics) >= len(recorded)
    lag_sum = metrics.registry.get_sample_value("integration_monitor_scheduler_lag_seconds_sum")
    assert lag_sum is not None and lag_sum >= 0


async def test_the_checks_of_an_integration_share_one_probe_context() -> None:
    contexts: dict[str, ProbeContext] = {}

    async def runner(check: CheckConfigBase, ctx: ProbeContext) -> CheckResult:
        contexts[f"{ctx.integration}/{check.name}"] = ctx
        return result_for(check, ctx)

    sched, _, _ = make(config({"a": [("one", "1h"), ("two", "1h")], "b": [("x", "1h")]}), runner)
    sched.start()
    try:
        await until(lambda: len(contexts), "3 runs' contexts", holds=lambda n: n == 3)
    finally:
        await sched.stop(1.0)
    assert contexts["a/one"] is contexts["a/two"]  # one object per integration: it is all a context says
    assert contexts["b/x"] is not contexts["a/one"]
    assert {c.integration for c in contexts.values()} == {"a", "b"}
    assert contexts["b/x"].deadlines is contexts["a/one"].deadlines


async def test_a_check_never_overlaps_itself() -> None:
    runner = Runner(delay=0.35)  # much longer than the interval
    sched, _, _ = make(config({"a": [("slow", "100ms")]}), runner)
    sched.start()
    try:
        await until(lambda: runner.finished, "3 finished runs", holds=lambda n: n >= 3)
    finally:
        await sched.stop(1.0)
    assert runner.max_active["a/slow"] == 1


async def test_global_concurrency_limit_is_respected() -> None:
    runner = Runner(delay=0.2)
    checks = {"a": [(f"c{i}", "100ms") for i in range(6)]}
    sched, _, _ = make(config(checks, max_concurrency=2), runner)
    sched.start()
    try:
        await until(lambda: runner.finished, "8 finished runs", holds=lambda n: n >= 8)
    finally:
        await sched.stop(1.0)
    assert runner.max_total == 2  # reached, never exceeded


async def test_reload_adds_removes_and_retimes_jobs() -> None:
    runner = Runner()
    sched, _, removed = make(config({"a": [("keep", "100ms"), ("drop", "100ms")], "b": [("x", "100ms")]}), runner)
    sched.start()
    try:
        await until(lambda: dict(runner.calls), "a run each of a/drop and b/x",
                    holds=lambda calls: calls.get("a/drop", 0) >= 1 and calls.get("b/x", 0) >= 1)
        sched.apply(config({"a": [("keep", "300ms"), ("new", "100ms")]}))
        assert sorted(removed) == [("a", "drop"), ("b", "x")]
        assert sched.check_status("a", "drop") is None
        keep = sched.check_status("a", "keep")
        assert keep is not None and keep["interval_seconds"] == 0.3
        dropped_calls = runner.calls["a/drop"]
        await until(lambda: runner.calls["a/new"], "2 runs of a/new", holds=lambda n: n >= 2)
        assert runner.calls["a/drop"] == dropped_calls
        assert sched.status()["jobs"] == 2
    finally:
        await sched.stop(1.0)


async def test_interval_factor_slows_an_integration_and_shows_in_status() -> None:
    metrics = Metrics()
    runner = Runner()
    sched, _, _ = make(config({"a": [("c", "100ms")], "b": [("c", "100ms")]}), runner, metrics)
    sched.start()
    try:
        await until(lambda: runner.calls["a/c"], "a run of a/c")
        sched.set_interval_factor("a", 50, "quota api at 93% (backoff above 90%)")
        status_a = sched.check_status("a", "c")
        assert status_a is not None and status_a["interval_seconds"] == pytest.approx(5.0)
        backoff = sched.status()["backoff"]["a"]
        assert backoff["interval_factor"] == 50 and "93%" in backoff["reason"]
        assert metrics.registry.get_sample_value("integration_probe_quota_backoff", {"integration": "a"}) == 1
        # A run submitted just before the change still starts: its task is queued already, and the loop runs
        # queued steps before a timer due later, this 50 ms one, however loaded the machine.
        await asyncio.sleep(0.05)
        slowed = runner.calls["a/c"]
        b_before = runner.calls["b/c"]
        await until(lambda: runner.calls["b/c"], f"b/c past {b_before + 2} runs", holds=lambda n: n >= b_before + 3)
        assert runner.calls["a/c"] == slowed  # a waits its 5 s; b keeps running
        sched.set_interval_factor("a", 1.0, "")
        assert sched.status()["backoff"] == {}
        assert metrics.registry.get_sample_value("integration_probe_quota_backoff", {"integration": "a"}) == 0
        await until(lambda: runner.calls["a/c"], f"a/c past {slowed} runs", holds=lambda n: n > slowed)  # 100 ms again
    finally:
        await sched.stop(1.0)


async def test_stop_waits_for_in_flight_probes_within_the_grace() -> None:
    runner = Runner(delay=0.3)
    sched, recorded, _ = make(config({"a": [("c", "100ms")]}), runner)
    sched.start()
    await until(lambda: runner.total_active, "one run in flight", holds=lambda n: n == 1)
    await sched.stop(5.0)
    assert runner.finished == 1 and len(recorded) == 1  # finished and recorded, not cancelled
    assert not sched.running


async def test_stop_cancels_probes_that_outlive_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Runner(delay=30)
    sched, recorded, _ = make(config({"a": [("c", "100ms")]}), runner)
    sched.start()
    await until(lambda: runner.total_active, "one run in flight", holds=lambda n: n == 1)
    waits: list[float | None] = []  # the time limit of each wait for tasks during the stop
    wait = asyncio.wait

    async def spy(tasks: Any, **kwargs: Any) -> Any:
        waits.append(kwargs.get("timeout"))
        return await wait(tasks, **kwargs)

    monkeypatch.setattr(scheduler_module.asyncio, "wait", spy)
    await sched.stop(0.1)
    # Stop waited for the probe no longer than the grace it was given, then cut it: it returned with the probe
    # cancelled, not finished (its own end is 30 s away), and nothing recorded.
    assert waits[0] == 0.1, waits  # (the waits after it are the cancellation's, integration_kit/tasks.py)
    assert runner.finished == 0 and runner.total_active == 0 and recorded == []


async def test_a_probe_cut_short_at_shutdown_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """The probe that outlives the grace is cancelled and the run ends there: stop says so once (a
    warning); APScheduler, to which the cancellation used to reach, logged an ERROR with a traceback."""
    runner = Runner(delay=30)
    sched, recorded, _ = make(config({"a": [("c", "100ms")]}), runner)
    sched.start()
    await until(lambda: runner.total_active, "one run in flight", holds=lambda n: n == 1)
    with caplog.at_level(logging.INFO):
        await sched.stop(0.1)
        await asyncio.sleep(0.05)  # APScheduler logs a job's outcome in a done-callback of its task
    assert runner.total_active == 0 and recorded == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("cancelling 1 probe(s)" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_probe_overrunning_its_deadline_is_recorded_as_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler_module, "DEADLINE_OVERRUN", 0.05)

    async def hangs(check: CheckConfigBase, ctx: ProbeContext) -> CheckResult:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    sched, recorded, _ = make(config({"a": [("c", "100ms")]}), hangs)
    sched.start()
    try:
        await until(lambda: len(recorded), "a recorded result")
    finally:
        await sched.stop(0.1)
    assert recorded[0].error_class == "timeout" and "overran" in recorded[0].detail


async def test_probe_exception_is_a_failed_internal_run_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 13, finding 10: a probe that raised recorded nothing, so probe_down could never fire."""
    calls = 0

    async def broken(check: CheckConfigBase, ctx: ProbeContext) -> CheckResult:
        nonlocal calls
        calls += 1
        raise RuntimeError("probe bug\nwith token s3cr3t-value") if calls % 2 else KeyError("other")

    sched, recorded, _ = make(config({"a": [("c", "100ms")]}), broken)
    sched.redactor = Redactor(["s3cr3t-value"])
    with caplog.at_level(logging.DEBUG, logger="monitor.scheduler"):
        sched.start()
        try:
            await until(lambda: len(recorded), "6 recorded results", holds=lambda n: n >= 6)
        finally:
            await sched.stop(0.1)
    assert all(r.error_class == "internal" and not r.ok for r in recorded)
    assert recorded[0].detail == "internal: the probe raised RuntimeError: probe bug with token [REDACTED]"
    assert recorded[1].detail == "internal: the probe raised KeyError: 'other'"
    full = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.exc_info[0] for r in full if r.exc_info] == [RuntimeError, KeyError]  # one traceback per kind
    assert "recorded as a failed run of class 'internal'" in full[0].getMessage()
    assert "s3cr3t-value" not in recorded[0].detail


async def test_a_check_removed_while_its_probe_runs_is_not_recorded_afterwards() -> None:
    runner = Runner(delay=0.3)
    sched, recorded, removed = make(config({"a": [("c", "100ms")]}), runner)
    sched.start()
    try:
        await until(lambda: runner.total_active, "one run in flight", holds=lambda n: n == 1)
        sched.apply(config({"b": [("d", "10s")]}))
        await until(lambda: runner.finished, "a finished run")
        # A window for a record of the finished run: it would be written in the run's own task, a few loop
        # turns after it finished; the loop runs them before this timer however loaded the machine.
        await asyncio.sleep(0.05)
    finally:
        await sched.stop(1.0)
    assert removed == [("a", "c")]
    assert [r for r in recorded if r.integration == "a"] == []  # its series stay gone


async def test_adding_jobs_works_no_signature_out_per_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """APScheduler checks each job's function against its arguments as the job is added, through
    inspect.signature. Every job runs one function, whose signature is worked out once, not again for each
    job added (at a start, a reload, a takeover): 40 % of an add_job, seconds at 50,000 checks
    (bench/start_path.py). Each job still runs its own check."""
    built = 0
    build = inspect.Signature.__init__

    def counted(self: inspect.Signature, *args: Any, **kwargs: Any) -> None:
        nonlocal built
        built += 1
        build(self, *args, **kwargs)

    monkeypatch.setattr(inspect.Signature, "__init__", counted)
    runner = Runner()
    first = {"a": [(f"c{i}", "1h") for i in range(40)]}
    sched, _, _ = make(config(first), runner)
    sched.start()
    try:
        await until(lambda: len(runner.calls), "40 checks run", holds=lambda n: n == 40)
        sched.apply(config({**first, "b": [(f"c{i}", "1h") for i in range(40)]}))  # a reload adds 40 more
        await until(lambda: len(runner.calls), "80 checks run", holds=lambda n: n == 80)
    finally:
        await sched.stop(1.0)
    assert set(runner.calls) == {f"{i}/c{n}" for i in "ab" for n in range(40)}
    assert built == 0


async def test_a_reload_while_the_jobs_are_added_leaves_one_job_per_check_of_the_new_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``prepare`` adds the jobs a few at a time, the loop turning in between (a start of 50,000 checks);
    a sync of the jobs meanwhile (a reload, a change of this replica's share) makes them match on its own,
    and the adding stops there: no job twice, none for a check the new config removed."""
    monkeypatch.setattr(job_sync, "JOBS_A_TURN", 5)
    runner = Runner()
    sched, _, _ = make(config({"a": [(f"c{i}", "1h") for i in range(30)]}), runner)
    first_turn = asyncio.Event()
    add_job = sched._aps.add_job

    def adding(*args: Any, **kwargs: Any) -> Any:
        if sched.status()["jobs"] >= 5:
            first_turn.set()  # prepare hands the loop back after this job
        return add_job(*args, **kwargs)

    monkeypatch.setattr(sched._aps, "add_job", adding)
    preparing = asyncio.get_running_loop().create_task(sched.prepare())
    await first_turn.wait()
    assert sched.status()["jobs"] == 5
    sched.apply(config({"a": [(f"c{i}", "1h") for i in range(10, 40)]}))
    await preparing
    assert sched._aps.state == STATE_PAUSED and not runner.calls  # no run before start, a reload or not
    sched.start()
    try:
        await until(lambda: len(runner.calls), "30 checks run", holds=lambda n: n == 30)
        assert sched.status()["jobs"] == 30
    finally:
        await sched.stop(1.0)
    assert set(runner.calls) == {f"a/c{i}" for i in range(10, 40)}
