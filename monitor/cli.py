"""``integration-monitor`` (also ``python -m monitor``): run, check-config, probe, demo, and more.

Subcommands are added by registrars, ``Callable[[subparsers], None]``, each calling
``subparsers.add_parser(...)`` and ``set_defaults(func=handler)`` where ``handler(args) -> int`` returns
the exit code. The core commands are registered here; the others live in monitor/commands/ (``silence``,
``send-test-alert``), each module with its ``register(subparsers)`` listed in ``REGISTRARS``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from alerts.rules.text import fmt_seconds
from integration_kit.ratelimit_headers import observed_quota
from monitor import __version__
from monitor.commands import send_test_alert, silence
from monitor.commands.common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, load_or_report, run_async

if TYPE_CHECKING:
    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult
    from monitor.settings import Config

Registrar = Callable[[Any], None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    code: int = args.func(args)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="integration-monitor",
        description="Watch third-party API integrations: probes, quotas, webhooks, metrics, alerts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for registrar in registrars():
        registrar(subparsers)
    return parser


def registrars() -> list[Registrar]:
    return list(REGISTRARS)


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-format", choices=("text", "json"), help="default: monitor.log_format of the config")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="default: monitor.log_level of the config")


def register_core(subparsers: Any) -> None:
    run = subparsers.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config file")
    run.add_argument("--listen", metavar="HOST:PORT", help="override monitor.listen")
    add_logging_arguments(run)
    run.set_defaults(func=cmd_run)

    check = subparsers.add_parser("check-config", help="validate a config file, list every problem")
    where = check.add_mutually_exclusive_group(required=True)
    where.add_argument("file", metavar="FILE", nargs="?")
    where.add_argument("-c", "--config", metavar="FILE", help="the same, as run and probe take it")
    check.set_defaults(func=cmd_check_config)

    probe = subparsers.add_parser("probe", help="run one check once and print the result")
    probe.add_argument("-c", "--config", required=True, metavar="FILE")
    probe.add_argument("target", metavar="INTEGRATION/CHECK")
    probe.set_defaults(func=cmd_probe)

    demo = subparsers.add_parser("demo", help="run the daemon against a built-in simulated vendor API")
    demo.add_argument("--listen", metavar="HOST:PORT", help="where the daemon serves /metrics and /api/status")
    demo.add_argument("--vendor-port", type=int, metavar="PORT", help="port of the simulated vendor API (default: any)")
    demo.add_argument("--redis-url", metavar="URL", help="Redis for the quota and webhook parts (default: $REDIS_URL)")
    demo.add_argument("--seed", type=int, help="seed of the simulated traffic")
    demo.add_argument("--replicas", type=int, metavar="N",
                      help="run N daemons sharing the Redis, as N sidecars would (needs a Redis; default 1)")
    add_logging_arguments(demo)
    demo.set_defaults(func=cmd_demo)


# ---- run ------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.app import App
    from monitor.logs import setup_logging
    from monitor.server import ListenError
    from monitor.settings import split_listen

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    if args.listen:
        try:
            split_listen(args.listen)
        except ValueError as exc:
            print(f"--listen: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    app = App(config, config_path=args.config, listen=args.listen)
    setup_logging(app.redactor, fmt=args.log_format or config.monitor.log_format,
                  level=args.log_level or config.monitor.log_level)
    try:
        return run_async(app.run())
    except ListenError as exc:  # the operator's to fix, not a bug: one line says what and where
        logging.getLogger("monitor").error("integration-monitor cannot start: %s", exc)
        return EXIT_FAILED
    except Exception:
        # Through the redacting log handler, not Python's default hook which prints raw tracebacks.
        logging.getLogger("monitor").exception("integration-monitor failed")
        return EXIT_FAILED


# ---- check-config ---------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or args.config
    config = load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    for line in summary_lines(config):
        print(line)
    checks = sum(1 for _ in config.iter_checks())
    print(f"{path}: OK ({len(config.integrations)} integration(s), {checks} check(s))")
    return EXIT_OK


def summary_lines(config: Config) -> list[str]:
    from integration_kit.durations import format_duration

    lines = []
    for name, integ in config.integrations.items():
        checks = ", ".join(
            f"{c.name} every {format_duration(c.interval)}" + ("" if c.enabled else " (disabled)") for c in integ.checks
        )
        quotas = ", ".join(f"{q.name} from {q.source}" for q in integ.quotas)
        parts = [
            f"{len(integ.checks)} check(s)" + (f" ({checks})" if checks else ""),
            f"{len(integ.quotas)} quota(s)" + (f" ({quotas})" if quotas else ""),
        ]
        if integ.webhooks is None:
            parts.append("webhooks: not watched")
        else:
            silence = integ.webhooks.max_silence
            parts.append("webhooks: watched" + (f", max silence {format_duration(silence)}" if silence else ""))
        lines.append(f"{name}: " + "; ".join(parts))
    return lines


# ---- probe ----------------------------------------------------------------------------------------


def cmd_probe(args: argparse.Namespace) -> int:
    from integration_kit.redact import Redactor
    from monitor.app import probe_once, secrets_of
    from monitor.logs import setup_logging

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    integration, sep, check = args.target.partition("/")
    if not sep or not any(c.name == check for c in getattr(config.integrations.get(integration), "checks", ())):
        print(unknown_check(config, args.target), file=sys.stderr)
        return EXIT_CONFIG
    redactor = Redactor(secrets_of(config))
    setup_logging(redactor, fmt=config.monitor.log_format, level="WARNING")
    result = run_async(probe_once(config, integration, check, redactor=redactor))
    print(format_result(result, redactor))
    return EXIT_OK if result.ok else EXIT_FAILED


_NAMES_SHOWN = 20  # a config of thousands of checks would print them all


def unknown_check(config: Config, target: str) -> str:
    """What ``probe`` says of a target that names no check: the form it expects, and the checks it might
    have meant (the named integration's, when there is one), at most ``_NAMES_SHOWN`` of them."""
    integration, sep, _ = target.partition("/")
    if integration in config.integrations:
        known = [f"{integration}/{c.name}" for c in config.integrations[integration].checks]
        where = f"{integration} has"
    else:
        known = [f"{i}/{c.name}" for i, c in config.iter_checks()]
        where = "the config has"
    shown = ", ".join(known[:_NAMES_SHOWN]) or "no checks"
    more = f" (+{len(known) - _NAMES_SHOWN} more)" if len(known) > _NAMES_SHOWN else ""
    form = "" if sep else " (expected INTEGRATION/CHECK)"
    return f"unknown check {target!r}{form}; {where}: {shown}{more}"


def format_result(result: CheckResult, redactor: Redactor) -> str:
    """A human-readable, redacted account of one run."""
    status = "OK" if result.ok else f"FAILED ({result.error_class})"
    lines = [f"{result.integration}/{result.check} [{result.kind}]: {status}"]

    def row(label: str, value: object) -> None:
        lines.append(f"  {label + ':':<12}{value}")

    if result.detail:
        row("detail", result.detail)
    if result.status_code is not None:
        row("status", result.status_code)
    attempts = ", ".join(c.value if c is not None else "ok" for c in result.attempt_classes)
    row("attempts", f"{result.attempts}" + (f" ({attempts})" if attempts else ""))
    row("duration", f"{result.duration * 1000:.1f} ms (all attempts: {result.total_duration * 1000:.1f} ms)")
    if result.phases:
        row("phases", "  ".join(f"{k} {v * 1000:.1f} ms" for k, v in result.phases.items()))
    for step in result.steps:
        where = "cleanup" if step.cleanup else "step"
        verdict = "skipped" if step.skipped else ("ok" if step.ok else step.detail)
        status = f" [{step.status_code}]" if step.status_code is not None else ""
        row(where, f"{step.name}{status} {step.duration * 1000:.1f} ms: {verdict}")
    if result.tls_expiry is not None:
        days = (result.tls_expiry - time.time()) / 86400
        when = datetime.fromtimestamp(result.tls_expiry, UTC).strftime("%Y-%m-%d %H:%M UTC")
        count = f"{abs(days):.0f}"
        span = f"{count} day" if count == "1" else f"{count} days"
        row("tls expiry", f"{when} (in {span})" if days >= 0 else f"{when} (expired {span} ago)")
    for obs in observed_quota(result):
        used = "?" if obs.used is None else f"{obs.used:g}"
        limit = "?" if obs.limit is None else f"{obs.limit:g}"
        ratio = f" ({obs.ratio:.0%})" if obs.ratio is not None else ""
        reset = f", resets in {fmt_seconds(obs.reset_seconds)}" if obs.reset_seconds is not None else ""
        row("quota", f"{obs.policy}: {used}/{limit}{ratio}{reset}")
    if result.request is not None:
        req = result.request
        row("request", f"{req.method} {redactor.url(req.url)}")
        for name, value in redactor.headers(req.headers).items():
            lines.append(f"{'':14}{name}: {value}")
        if req.body_excerpt:
            row("body", redactor.text(req.body_excerpt))
    if result.response_excerpt:
        row("response", redactor.text(result.response_excerpt))
    return redactor.text("\n".join(lines))


# ---- demo -----------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.demo import run_demo  # imported here: the demo's simulated API is not needed otherwise

    code: int = run_demo(args)
    return code


REGISTRARS: list[Registrar] = [register_core, silence.register, send_test_alert.register]


if __name__ == "__main__":
    sys.exit(main())
