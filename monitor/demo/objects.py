"""The simulated payments API's test objects (part of the demo's vendor, monitor/demo/vendor.py), for the
demo's multi-step flow: create a test charge, read it back, delete it.

``POST /payments/v1/test_charges`` creates one (201, ``id`` and an ``ETag``), ``GET …/{id}`` reads it
and ``DELETE …/{id}`` deletes it (204). Reads are eventually consistent, as many vendors' are: every
``lag_every``-th object is not readable yet right after it was created (404), so the flow fails at its
``read`` step now and then — and its cleanup deletes the object all the same (``live`` stays empty).
"""

from __future__ import annotations

import itertools
import json

from aiohttp import web


class DemoObjects:
    def __init__(self, *, lag_every: int) -> None:
        self.lag_every = lag_every
        self.live: dict[str, dict[str, object]] = {}
        self._serial = itertools.count(1)
        self._lagging: set[str] = set()

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return web.json_response({"error": {"message": "invalid JSON"}}, status=400)
        n = next(self._serial)
        oid = f"ch_test_{n:06d}"
        self.live[oid] = {"id": oid, "object": "charge", "status": "pending", "amount": body.get("amount")}
        if self.lag_every and n % self.lag_every == 0:
            self._lagging.add(oid)
        return web.json_response(self.live[oid], status=201, headers={"ETag": f'"{oid}-1"'})

    async def read(self, request: web.Request) -> web.Response:
        oid = request.match_info["id"]
        if oid in self._lagging:
            self._lagging.discard(oid)  # replicated by the next read
            return web.json_response({"error": {"message": f"No such charge: {oid}"}}, status=404)
        found = self.live.get(oid)
        if found is None:
            return web.json_response({"error": {"message": f"No such charge: {oid}"}}, status=404)
        return web.json_response(found)

    async def delete(self, request: web.Request) -> web.Response:
        oid = request.match_info["id"]
        self._lagging.discard(oid)
        if self.live.pop(oid, None) is None:
            return web.json_response({"error": {"message": f"No such charge: {oid}"}}, status=404)
        return web.Response(status=204)
