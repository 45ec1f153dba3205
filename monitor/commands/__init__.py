"""Subcommands of ``integration-monitor`` beyond the core ones of monitor/cli.py, and what all share
(``common``). Each module has ``register(subparsers)``; monitor/cli.py lists them in ``REGISTRARS``."""
