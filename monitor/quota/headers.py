"""Rate-limit response headers → quota observations (GitHub, IETF drafts, Shopify, Salesforce, …)."""

from __future__ import annotations

from collections.abc import Mapping

from monitor.quota.model import QuotaObservation


def parse_rate_limit_headers(headers: Mapping[str, str], *, now: float) -> list[QuotaObservation]:
    """Never raises. Placeholder until the quota work lands: recognises nothing yet."""
    return []
