"""The integration kit: the vocabulary and practices shared by the monitor's probes and by integration
services.

Everything here imports only the standard library, aiohttp (with yarl) and redis, so an integration
service can use it without the daemon's dependencies (APScheduler, prometheus-client, slack-sdk,
pydantic); http-sfv is used when installed (``ratelimit_headers``). Nothing here imports ``checks``,
``alerts`` or ``monitor`` (import-linter contracts in pyproject.toml; tests/test_kit_imports.py).

- ``errors``: the bounded error classes, and which ones a retry can fix
- ``classify``: an HTTP call's outcome (exception, status, body, latency) → error class + detail
- ``retry``: the retry policy, backoff with full jitter, the one ``Retry-After`` reader, the runner, and
  ``Backoff`` (the wait of a loop that keeps trying)
- ``supervisor``: background loops that restart after a crash (logged, counted) and always stop when asked
- ``tasks``: stopping a background task: cancelled again until it has ended (a cancellation can get lost)
- ``results``: a check run's result, the request behind it, quota observations
- ``ratelimit_headers``: rate-limit response headers → quota observations
- ``header_values``: numbers in header values (first item, delay or epoch)
- ``limiter_formats``: the Redis key formats of common rate limiters, decoded
- ``webhooks``: the processed-event-ID ledger for webhook handlers, and its key names
- ``webhook_observations``: a webhook stream's totals and the observation its alert rules read
- ``redact``: the redactor every outgoing text goes through
- ``oauth2``: OAuth2 token requests (client credentials, refresh), RFC 6749 errors → error classes
- ``token_cache``: access tokens per credential, renewed before expiry, one fetch across processes (Redis)
- ``signing``: HMAC request signatures from a template of request parts
- ``client``: ``Integration``, the kit for an asyncio service's vendor calls (its aiohttp middleware)
- ``sync_client``: ``SyncIntegration``, the same for blocking code; ``requests_adapter``: its requests
  adapter (the one module that needs requests: the distribution's ``requests`` extra)
- ``integration_base``: what the asyncio and blocking clients share (settings, the end of a call)
- ``calls``: a call's expectation, its outcome and the ``CallError`` of a failed one
- ``limiter``: the GCRA rate limiter in Redis shared by a service's processes (redis_rate's format)
- ``recorder``: the traffic counters, batched in memory and flushed to Redis
- ``traffic``: the traffic counters' key format, and its decoder (for the monitor)
- ``durations``, ``timezones``: config value types (pydantic hooks, pydantic not needed to import)
"""
