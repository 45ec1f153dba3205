"""The simulated storefront's GraphQL Admin API (part of the demo's vendor, monitor/demo/vendor.py), the
way Shopify's behaves: query cost is charged against a leaky bucket reported in every response's
``extensions.cost.throttleStatus``, and a query that does not fit is answered **200 with errors**
(``THROTTLED``) — no 429, no rate-limit header.

A background sync job drains the bucket over each ``cycle`` (from full to empty in three quarters of it,
then it refills), so the monitor's quota gauge climbs past 80 % (the quota alert), past 90 % (probes
back off) and to throttling, then recovers. A query that asks for ``legacyResourceId`` gets the error a
schema change gives: ``errors`` and ``data: null`` (``graphql_error``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

MAXIMUM = 1000.0
RESTORE_RATE = 50.0
QUERY_COST = 12.0


class DemoGraphql:
    def __init__(self, *, elapsed: Callable[[], float], cycle: float) -> None:
        self._elapsed = elapsed
        self.cycle = cycle

    def available(self) -> float:
        """Points left in the bucket now: the sync job's drain, refilled in the last quarter."""
        phase = (self._elapsed() % self.cycle) / self.cycle
        if phase < 0.75:
            return max(0.0, MAXIMUM * (1 - phase / 0.7))  # empty a little before the drain ends
        return MAXIMUM * (phase - 0.75) / 0.25

    async def handle(self, request: web.Request) -> web.Response:
        try:
            payload = json.loads(await request.read())
            query = payload["query"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"errors": [{"message": "Bad Request: no query"}]}, status=400)
        if not isinstance(query, str):
            return web.json_response({"errors": [{"message": "query must be a string"}]}, status=400)
        available = self.available()
        if "legacyResourceId" in query:
            return web.json_response({
                "errors": [{"message": "Field 'legacyResourceId' doesn't exist on type 'Shop'",
                            "locations": [{"line": 1, "column": 9}], "path": ["query", "shop", "legacyResourceId"],
                            "extensions": {"code": "undefinedField", "typeName": "Shop",
                                           "fieldName": "legacyResourceId"}}],
                "data": None,
            })
        status = {"maximumAvailable": MAXIMUM, "currentlyAvailable": round(available), "restoreRate": RESTORE_RATE}
        if available < QUERY_COST:
            return web.json_response({
                "errors": [{"message": "Throttled", "extensions": {
                    "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": {"cost": {"requestedQueryCost": QUERY_COST, "actualQueryCost": None,
                                        "throttleStatus": status}},
            })
        status["currentlyAvailable"] = round(available - QUERY_COST)
        return web.json_response({
            "data": {"shop": {"name": "Demo Store", "currencyCode": "USD"},
                     "products": {"nodes": [{"id": "gid://shopify/Product/1", "title": "Demo mug"}]}},
            "extensions": {"cost": {"requestedQueryCost": QUERY_COST, "actualQueryCost": QUERY_COST - 2,
                                    "throttleStatus": status}},
        })
