"""Logging: text or JSON lines on stderr, every record passed through the redactor first.

The redacting filter sits on the handler, not on a logger: handler filters see every record that
reaches the handler, including those propagated from library loggers (aiohttp, apscheduler, redis).
It rewrites the message (args merged in), the formatted traceback and any string ``extra`` fields,
so no secret reaches a log line whatever the caller passed.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

from integration_kit.redact import Redactor

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
_HANDLER_NAME = "integration-monitor"

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is redacted too.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Masks secrets in the record in place. Always lets the record through."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        text = self.redactor.text
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record (nor leak its args)
            message = f"{record.msg!s} (unformattable log arguments)"
        record.msg, record.args = text(message), None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = text(record.exc_text)
        if record.stack_info:
            record.stack_info = text(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, text(value))
        return True


def make_formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        formatter: logging.Formatter = JsonFormatter(
            JSON_FIELDS, rename_fields={"levelname": "level", "name": "logger", "asctime": "time"}
        )
        return formatter
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {fmt!r}: expected text or json")


def setup_logging(
    redactor: Redactor, *, fmt: str = "text", level: str = "INFO", stream: IO[str] | None = None
) -> logging.Handler:
    """Install one redacting handler on the root logger (replacing the one a previous call installed)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(RedactingFilter(redactor))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    # APScheduler logs two INFO lines per job run; aiohttp's access log is not ours to keep.
    for name in ("apscheduler", "aiohttp.access"):
        logging.getLogger(name).setLevel(quiet)
    return handler

