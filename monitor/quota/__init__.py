"""Rate-limit quotas: counters kept in Redis and limits announced in response headers."""
