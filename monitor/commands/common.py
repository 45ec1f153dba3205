"""What every command shares: exit codes, loading a config file with every problem printed, and running
a coroutine (on uvloop when installed)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from monitor.settings import Config, ConfigError, load_config

EXIT_OK, EXIT_FAILED = 0, 1
EXIT_CONFIG = EXIT_USAGE = 2  # an invalid config file or command line

T = TypeVar("T")


def load_or_report(path: str) -> Config | None:
    """Load a config, or print every problem (path: message) to stderr and return None."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(format_problems(exc), file=sys.stderr)
        return None


def format_problems(exc: ConfigError) -> str:
    lines = [f"{exc.source}: {len(exc.problems)} problem(s)"]
    lines += [f"  {path}: {message}" if path else f"  {message}" for path, message in exc.problems]
    return "\n".join(lines)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (the ``speed`` extra), else on the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
