"""The demo's webhook receiver: what an integration's own service would run, deduplicating deliveries with
``integration_kit.webhooks.WebhookLedger`` (so the monitor's webhook gauges have something to show).

Endpoint: ``POST /webhook`` with a JSON object body carrying the event ``id`` (or a ``Webhook-Id``
header, as in the Standard Webhooks spec) and optionally its ``type``. Answers:

- ``200 {"status": "processed", "id": …}`` — first delivery of this ID, handled;
- ``200 {"status": "duplicate", "id": …}`` — seen before: acknowledged, not handled again (a 2xx stops
  the vendor's retries);
- ``400`` — not a JSON object or no event ID (retrying won't help);
- ``500`` — the handler raised: the claim is released, so the vendor's retry is processed;
- ``503`` — Redis unreachable: nothing recorded, the vendor should retry later.

``GET /webhook`` lists the IDs processed recently (newest last), for a look during the demo.
Signatures are not verified (out of scope of the helper; a real service verifies them first).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from redis.exceptions import RedisError

from integration_kit.webhooks import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_RETENTION,
    MAX_EVENT_ID_LEN,
    MAX_EVENT_TYPE_LEN,
    WebhookLedger,
)

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

Handler = Callable[[str, Mapping[str, Any]], Awaitable[None]]  # (event id, event)
LEDGER: web.AppKey[WebhookLedger] = web.AppKey("ledger", WebhookLedger)
PROCESSED: web.AppKey[deque[str]] = web.AppKey("processed", deque)


async def _record_only(event_id: str, event: Mapping[str, Any]) -> None:
    """Default handler: the demo has no business logic; processing = being listed as processed."""


def make_receiver_app(
    redis: redis.asyncio.Redis,
    integration: str,
    *,
    prefix: str = DEFAULT_KEY_PREFIX,
    retention: float = DEFAULT_RETENTION,
    handler: Handler = _record_only,
    path: str = "/webhook",
    keep_processed: int = 100,
) -> web.Application:
    """An aiohttp app receiving ``integration``'s webhooks at ``path`` (see the module docstring)."""
    ledger = WebhookLedger(redis, integration=integration, prefix=prefix, retention=retention)
    processed: deque[str] = deque(maxlen=keep_processed)

    async def receive(request: web.Request) -> web.Response:
        try:
            event = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(event, dict):
            return web.json_response({"error": "body is not a JSON object"}, status=400)
        event_id = event.get("id") or request.headers.get("Webhook-Id")
        if not isinstance(event_id, str) or not 1 <= len(event_id) <= MAX_EVENT_ID_LEN:
            return web.json_response({"error": "no usable event id (JSON 'id' or Webhook-Id header)"}, status=400)
        event_type = event.get("type") if isinstance(event.get("type"), str) else None
        if event_type is not None and len(event_type) > MAX_EVENT_TYPE_LEN:
            return web.json_response({"error": "event type too long"}, status=400)
        try:
            async with ledger.claim(event_id, event_type=event_type or None) as first:
                if not first:
                    return web.json_response({"status": "duplicate", "id": event_id})
                await handler(event_id, event)
        except RedisError as exc:
            log.warning(
                "webhook receiver %s: Redis unavailable (%s); asking the sender to retry",
                integration,
                type(exc).__name__,
            )
            return web.json_response({"error": "storage unavailable, retry later"}, status=503)
        except Exception:
            log.exception("webhook receiver %s: handler failed for %s; claim released", integration, event_id[:64])
            return web.json_response({"error": "processing failed, retry later"}, status=500)
        processed.append(event_id)
        return web.json_response({"status": "processed", "id": event_id})

    async def recent(request: web.Request) -> web.Response:
        return web.json_response({"integration": integration, "processed": list(processed)})

    app = web.Application()
    app[LEDGER] = ledger
    app[PROCESSED] = processed
    app.router.add_post(path, receive)
    app.router.add_get(path, recent)
    return app
