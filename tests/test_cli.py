"""The ``integration-monitor`` command: real subprocesses for run (SIGTERM, SIGHUP) and probe."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import signal
import socket
import sys
import time
import types
from pathlib import Path

import pytest
from daemon_support import (
    CANARY_HEADER,
    EXE,
    Daemon,
    assert_no_canary,
    daemon,
    daemon_config,
    get,
    need_console_script,
    route_target,
    samples,
    write,
)
from targets import Reply, Target
from waiting import until

from checks import PROBES
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor import cli


@pytest.fixture(autouse=True)
def _need_console_script() -> None:
    need_console_script()


async def runs_of(d: Daemon, check: str) -> int:
    doc = json.loads((await get(f"{d.url}/api/status"))[2])
    runs: int = doc["integrations"]["shop"]["checks"][check]["runs"]
    return runs


async def wait_runs(d: Daemon, check: str, n: int) -> None:
    await until(lambda: runs_of(d, check), f"{check} to run {n} times", holds=lambda runs: runs >= n)


async def test_run_serves_then_sigterm_drains_in_flight_probes_and_exits_0(target: Target, tmp_path: Path) -> None:
    route_target(target)
    target.route("/slow", Reply(json={"data": {"id": "x"}}, delay=0.8))
    slow = (
        f"  slow:\n    checks:\n      - {{name: slow, kind: http, url: '{target.url('/slow')}', "
        "interval: 200ms, timeout: 5s}\n"
    )
    config = write(tmp_path / "monitor.yaml", daemon_config(target, extra=slow))
    async with daemon(config) as d:
        await wait_runs(d, "broken", 2)
        metrics = (await get(f"{d.url}/metrics"))[2]
        status = (await get(f"{d.url}/api/status"))[2]
        assert_no_canary(metrics, "/metrics")
        assert_no_canary(status, "/api/status")
        seen = len(target.hits("/slow"))
        # A new slow request just arrived: its probe stays in flight for 0.8 s, across the SIGTERM.
        await until(lambda: len(target.hits("/slow")) > seen, "a slow probe in flight")
        hits_before = len(target.hits("/slow"))
        assert await d.finish(signal.SIGTERM) == 0
    log = d.log
    assert "SIGTERM received: stopping" in log and "integration-monitor stopped" in log
    assert "in-flight probe(s)" in log and "cancelling" not in log  # the slow probe finished in the grace
    assert len(target.hits("/slow")) == hits_before  # no new probe after SIGTERM
    assert_no_canary(log, "daemon log")


async def test_sighup_with_a_broken_file_keeps_the_old_config(target: Target, tmp_path: Path) -> None:
    route_target(target)
    config = write(tmp_path / "monitor.yaml", daemon_config(target))
    async with daemon(config, "--log-format", "json") as d:
        await wait_runs(d, "ok", 1)
        write(config, daemon_config(target).replace("interval: 200ms", "interval: whenever", 1))
        d.proc.send_signal(signal.SIGHUP)
        await until_reload_gauge(d, 0)
        runs = await runs_of(d, "ok")
        await wait_runs(d, "ok", runs + 2)  # the old config keeps probing
        assert await d.finish(signal.SIGTERM) == 0
    records = [json.loads(line) for line in d.log.splitlines() if line.startswith("{")]
    failed = [r for r in records if "config reload failed" in r["message"]]
    assert len(failed) == 1 and failed[0]["level"] == "ERROR"
    assert "integrations.shop.checks[0].interval: expected a duration like 500ms, 30s, 5m or 4h, got 'whenever'" in (
        failed[0]["message"]
    )
    assert_no_canary(d.log, "daemon log")


async def test_sighup_with_a_file_that_is_not_utf8_is_a_failed_reload(target: Target, tmp_path: Path) -> None:
    """Finding 7: the gauge stayed 1 and the error surfaced as "Task exception was never retrieved"."""
    route_target(target)
    config = write(tmp_path / "monitor.yaml", daemon_config(target))
    async with daemon(config) as d:
        await wait_runs(d, "ok", 1)
        config.write_bytes(b"\xff\xfe" + daemon_config(target).encode("utf-16-le"))
        d.proc.send_signal(signal.SIGHUP)
        await until_reload_gauge(d, 0)
        runs = await runs_of(d, "ok")
        await wait_runs(d, "ok", runs + 1)  # the old config keeps probing
        assert await d.finish(signal.SIGTERM) == 0
    assert "the file is UTF-16 (byte-order mark ff fe); save it as UTF-8" in d.log
    assert "Task exception was never retrieved" not in d.log and "Traceback" not in d.log


async def until_reload_gauge(d: Daemon, value: float) -> None:
    async def gauge() -> float:
        return samples((await get(f"{d.url}/metrics"))[2])[("integration_monitor_config_last_reload_successful", ())]

    await until(gauge, f"the reload gauge at {value}", holds=lambda seen: seen == value)


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(EXE), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_probe_prints_a_readable_redacted_result(target: Target, tmp_path: Path) -> None:
    route_target(target)
    config = write(tmp_path / "monitor.yaml", daemon_config(target))

    code, out, err = await run_cli("probe", "-c", str(config), "shop/ok")
    assert code == 0, err
    assert out.splitlines()[0] == "shop/ok [http]: OK"
    assert "status:     200" in out and "phases:" in out and "attempts:   1 (ok)" in out

    code, out, err = await run_cli("probe", "-c", str(config), "shop/broken")
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == "shop/broken [http]: FAILED (http_5xx)"
    assert "  detail:     http_5xx: 500 Internal Server Error" in lines
    assert "  attempts:   2 (http_5xx, http_5xx)" in lines
    assert any(line.startswith("  request:    GET http://127.0.0.1:") for line in lines)
    assert "Authorization: [REDACTED]" in out and "response:   internal error; you sent [REDACTED]" in out
    for text, where in ((out, "probe stdout"), (err, "probe stderr")):
        assert_no_canary(text, where)

    code, _, err = await run_cli("probe", "-c", str(config), "shop/nope")
    assert code == 2 and "unknown check 'shop/nope'; shop has: shop/ok, shop/broken" in err


async def test_run_on_an_address_in_use_says_so_in_one_line_and_exits_1(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = write(tmp_path / "monitor.yaml", "integrations: {}\n")
    try:
        code, _, err = await run_cli("run", "-c", str(config), "--listen", f"127.0.0.1:{port}")
    finally:
        taken.close()
    assert code == 1, err
    assert f"integration-monitor cannot start: cannot listen on 127.0.0.1:{port} (monitor.listen or --listen): " \
           "address already in use" in err, err
    assert "Traceback" not in err, err


async def test_check_config_takes_the_file_as_run_and_probe_take_it_too(tmp_path: Path) -> None:
    """``check-config FILE``, and ``check-config -c FILE`` as ``run`` and ``probe`` are given it; neither or
    both is a usage error (exit 2)."""
    config = write(tmp_path / "monitor.yaml", "integrations: {}\n")
    for args in (("check-config", str(config)), ("check-config", "-c", str(config))):
        code, out, err = await run_cli(*args)
        assert (code, out) == (0, f"{config}: OK (0 integration(s), 0 check(s))\n"), (args, err)
    for args in (("check-config",), ("check-config", str(config), "-c", str(config))):
        code, _, err = await run_cli(*args)
        assert code == 2 and "usage: integration-monitor check-config" in err, (args, err)


async def test_python_dash_m_and_version() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "--version", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and out.decode().startswith("integration-monitor ")


def test_run_with_a_broken_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "bad.yaml", "monitor: {listen: nowhere}\n")
    assert cli.main(["run", "-c", str(config)]) == 2
    assert "monitor.listen: expected HOST:PORT" in capsys.readouterr().err


def test_registrars_add_subcommands(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def register(subparsers: object) -> None:
        parser = subparsers.add_parser("hello", help="test command")  # type: ignore[attr-defined]
        parser.add_argument("--name", default="world")
        def hello(args: object) -> int:
            calls.append(args.name)  # type: ignore[attr-defined]
            return 7

        parser.set_defaults(func=hello)

    monkeypatch.setattr(cli, "REGISTRARS", [*cli.REGISTRARS, register])
    assert cli.main(["hello", "--name", "ext"]) == 7
    assert calls == ["ext"]


def test_demo_is_delegated_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    demo = types.ModuleType("monitor.demo")
    def run_demo(args: object) -> int:
        seen.append(args)
        return 0

    demo.run_demo = run_demo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "monitor.demo", demo)
    assert cli.main(["demo", "--listen", "127.0.0.1:9999", "--log-format", "json"]) == 0
    (args,) = seen
    assert (args.listen, args.log_format) == ("127.0.0.1:9999", "json")  # type: ignore[attr-defined]



def test_probe_of_a_probe_that_raises_shows_an_internal_failure_redacted(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    log_stream: io.StringIO,
) -> None:
    """Issue 13, finding 10, in the ``probe`` command: a failed run of class internal, exit 1, and the
    traceback through the redacting log rather than Python's own printer (which would show secrets)."""

    async def broken(check: object, ctx: object) -> object:
        raise RuntimeError(f"bug while holding {CANARY_HEADER}")

    monkeypatch.setitem(PROBES, "http", dataclasses.replace(PROBES["http"], probe=broken))
    route_target(target)
    config = write(tmp_path / "monitor.yaml", daemon_config(target))
    assert cli.main(["probe", "-c", str(config), "shop/ok"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "shop/ok [http]: FAILED (internal)"
    assert "  detail:     internal: the probe raised RuntimeError: bug while holding [REDACTED]" in out
    assert "Traceback (most recent call last)" in err and "raised instead of returning a result" in err
    for text, where in ((out, "probe stdout"), (err, "probe stderr")):
        assert_no_canary(text, where)


def test_probe_output_says_when_a_certificate_expired_and_resets_in_readable_units() -> None:
    now = time.time()
    result = CheckResult(
        integration="shop", check="ok", kind="http", ok=True, error_class=None, detail="", started_at=now,
        duration=0.01, total_duration=0.01, status_code=200, tls_expiry=now - 2160.4 * 86400,
        rate_limit_headers=(("x-ratelimit-limit", "5000"), ("x-ratelimit-remaining", "4000"),
                            ("x-ratelimit-reset-after", "597.415")),
    )
    out = cli.format_result(result, Redactor())
    assert "(expired 2160 days ago)" in out, out  # not "(in -2160 days)"
    assert "default: 1000/5000 (20%), resets in 10m" in out, out  # not "resets in 597.415s"
    yesterday = cli.format_result(dataclasses.replace(result, tls_expiry=now - 86400), Redactor())
    assert "(expired 1 day ago)" in yesterday, yesterday  # not "1 days"


def test_probe_of_an_unknown_check_names_the_form_and_at_most_20_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checks = ", ".join(f"{{name: c{i}, kind: http, url: 'http://127.0.0.1:1/'}}" for i in range(30))
    config = str(write(tmp_path / "big.yaml", f"integrations:\n  big:\n    checks: [{checks}]\n  small:\n"
                                               "    checks: [{name: only, kind: http, url: 'http://127.0.0.1:1/'}]\n"))
    assert cli.main(["probe", "-c", config, "big/nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "unknown check 'big/nope'; big has: " + ", ".join(f"big/c{i}" for i in range(20)) + " (+10 more)"
    assert cli.main(["probe", "-c", config, "small"]) == 2
    assert capsys.readouterr().err.strip() == (
        "unknown check 'small' (expected INTEGRATION/CHECK); small has: small/only"
    )
    assert cli.main(["probe", "-c", config, "nope/only"]) == 2
    assert "unknown check 'nope/only'; the config has: big/c0, " in capsys.readouterr().err
