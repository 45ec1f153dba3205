"""Wording shared by the rules: ratios, durations, error-class counts and the last failure, as text."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from alerts.stats import CheckStats


def fmt_ratio(value: float) -> str:
    return f"{value * 100:.1f}%"


def fmt_seconds(value: float) -> str:
    if value >= 86400:
        return f"{value / 86400:.1f}d"
    if value >= 3600:
        return f"{value / 3600:.1f}h"
    if value >= 60:
        return f"{value / 60:.0f}m"
    if value >= 1:
        return f"{value:.1f}s"
    return f"{value * 1000:.0f}ms"


def fmt_utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def classes_text(classes: Mapping[str, int]) -> str:
    """``timeout ×7, http_5xx ×3`` — most frequent first."""
    return ", ".join(f"{name} ×{count}" for name, count in sorted(classes.items(), key=lambda kv: (-kv[1], kv[0])))


def last_failure_detail(stats: CheckStats) -> dict[str, str]:
    last = stats.last_failure
    if last is None:
        return {}
    # A probe's detail already starts with its class ("auth: 401 Unauthorized"); don't say it twice.
    cls = str(last.error_class or "unknown")
    detail = last.detail if last.detail.startswith(cls) else f"{cls}: {last.detail}"
    out = {"last error": detail.strip().rstrip(":")}
    if last.status_code is not None:
        out["last status"] = str(last.status_code)
    return out
