"""``integration-monitor silence add|list|expire -c FILE``: manage silences in the daemon's Redis.

The command reads the config file for ``monitor.redis_url`` and ``alerting.key_prefix`` and writes the
silences where the running daemon reads them on every evaluation. Without Redis the daemon keeps its
silences in memory: then use ``POST /api/silences`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from typing import TYPE_CHECKING, Any

from alerts.rules import unknown_alert
from alerts.silence_book import UNREADABLE_REMOVED, SilenceBook
from alerts.silences import ANY, from_config, new_silence
from alerts.store import AlertStore
from integration_kit.durations import parse_duration
from monitor.commands.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, load_or_report

if TYPE_CHECKING:

    from monitor.settings import Config


def register(subparsers: Any) -> None:
    silence = subparsers.add_parser("silence", help="mute alert notifications for a while (add, list, expire)")
    actions = silence.add_subparsers(title="actions", metavar="ACTION")

    add = actions.add_parser("add", help="add a silence")
    add.add_argument("-c", "--config", required=True, metavar="FILE", help="the daemon's config file")
    add.add_argument("--integration", default=ANY, help="integration name, or * for all (default)")
    add.add_argument("--alert", default=ANY, help="rule name (error_rate, quota, probe_down, …) or * (default)")
    add.add_argument("--check", default=None, help="only alerts about this check")
    add.add_argument("--duration", required=True, help="how long, e.g. 30m, 2h, 1d")
    add.add_argument("--comment", default="", help="why (shown in the list)")
    add.add_argument("--by", default="", help="who (shown in the list)")
    add.set_defaults(func=cmd_add)

    lst = actions.add_parser("list", help="list silences")
    lst.add_argument("-c", "--config", required=True, metavar="FILE")
    lst.add_argument("--all", action="store_true", help="include expired silences")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=cmd_list)

    exp = actions.add_parser("expire", help="end a silence now")
    exp.add_argument("-c", "--config", required=True, metavar="FILE")
    exp.add_argument("id", metavar="ID", help="the silence id shown by `silence list`")
    exp.set_defaults(func=cmd_expire)

    silence.set_defaults(func=lambda _args: (silence.print_help(sys.stderr), EXIT_USAGE)[1])


def _config(args: argparse.Namespace) -> Config | None:
    config = load_or_report(args.config)
    if config is None:
        return None
    if config.monitor.redis_url is None:
        print(
            f"{args.config}: monitor.redis_url is not set, so the daemon keeps silences in its memory; "
            "use POST /api/silences on the running daemon instead",
            file=sys.stderr,
        )
        return None
    return config


async def _with_store(config: Config, work: Any) -> int:
    import redis

    from monitor.redis_connection import connect

    assert config.monitor.redis_url is not None
    client = connect(config.monitor.redis_url.get_secret_value())
    try:
        code: int = await work(AlertStore(client, config.alerting.key_prefix))
        return code
    except (redis.RedisError, OSError) as exc:
        print(f"cannot reach Redis: {type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await client.aclose()


def cmd_add(args: argparse.Namespace) -> int:
    config = _config(args)
    if config is None:
        return EXIT_USAGE
    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        print(f"--duration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.integration != ANY and args.integration not in config.integrations:
        known = ", ".join(sorted(config.integrations)) or "none"
        print(f"--integration: unknown integration {args.integration!r} (configured: {known})", file=sys.stderr)
        return EXIT_USAGE
    if (problem := unknown_alert(args.alert)) is not None:
        print(f"--alert: {problem}", file=sys.stderr)
        return EXIT_USAGE
    now = dt.datetime.now(dt.UTC).timestamp()
    try:
        silence = new_silence(now=now, duration=duration, integration=args.integration, alert=args.alert,
                              check=args.check, comment=args.comment, created_by=args.by)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE

    async def work(store: AlertStore) -> int:
        await store.put_silence(silence)
        print(f"silence {silence.id} added: {_describe(silence.integration, silence.alert, silence.check)} "
              f"until {_when(silence.ends_at)}")
        return EXIT_OK

    return asyncio.run(_with_store(config, work))


def cmd_list(args: argparse.Namespace) -> int:
    config = _config(args)
    if config is None:
        return EXIT_USAGE

    async def work(store: AlertStore) -> int:
        now = dt.datetime.now(dt.UTC).timestamp()
        silences = [*from_config(config.alerting.silences), *await store.load_silences()]
        shown = [s for s in silences if args.all or s.active(now)]
        if args.json:
            print(json.dumps([{**s.to_dict(), "active": s.active(now)} for s in shown], indent=2))
            return EXIT_OK
        if not shown:
            print("no active silences" if not args.all else "no silences")
        for s in shown:
            state = "active " if s.active(now) else "expired"
            note = f"  # {s.comment}" if s.comment else ""
            by = f" by {s.created_by}" if s.created_by else ""
            print(f"{s.id}  {state}  {_describe(s.integration, s.alert, s.check)}  until {_when(s.ends_at)}{by}{note}")
        return EXIT_OK

    return asyncio.run(_with_store(config, work))


def cmd_expire(args: argparse.Namespace) -> int:
    config = _config(args)
    if config is None:
        return EXIT_USAGE

    async def work(store: AlertStore) -> int:
        book = SilenceBook(store, lambda: config.alerting.silences, lambda: dt.datetime.now(dt.UTC).timestamp())
        expired = await book.expire(args.id)
        if expired is None:
            print(f"no silence with id {args.id!r} (config-file silences end by editing the config)", file=sys.stderr)
            return EXIT_FAILED
        note = f" {UNREADABLE_REMOVED}" if expired.comment == UNREADABLE_REMOVED else ""
        print(f"silence {expired.id} expired{note}")
        return EXIT_OK

    return asyncio.run(_with_store(config, work))


def _describe(integration: str, alert: str, check: str | None) -> str:
    return f"integration={integration} alert={alert}" + (f" check={check}" if check else "")


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
