"""The integration kit: the vocabulary and practices shared by the monitor's probes and by integration
services.

Everything here imports only the standard library, aiohttp (with yarl) and redis, so an integration
service can use it without the daemon's dependencies (APScheduler, prometheus-client, slack-sdk,
pydantic). Nothing here imports ``checks``, ``alerts`` or ``monitor``.
"""
