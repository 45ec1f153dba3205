"""Access tokens per credential, shared by every caller of a process and, with Redis, by every process.

``TokenCache.get(key, grant, session)`` answers a token that is not about to expire (``TokenGrant.
refresh_margin``), fetching one only when needed:

1. **Memory.** A token of this process that is still fresh is answered at once (no I/O).
2. **Single flight in the process.** Concurrent callers of one key share one fetch (an asyncio task that
   a caller's own deadline cancels the wait for, never the fetch the others share).
3. **Redis, when given: one fetch across the fleet.** The task reads ``<prefix>{<key>}:token``; a
   fresh token there (fetched by another replica) is used. Otherwise it takes a short lock
   (``SET …:lock NX PX``), fetches, writes the token with a TTL ending ``refresh_margin`` before it
   expires (so Redis never hands out a token about to die) and releases the lock. A replica that finds
   the lock taken polls for the token the holder writes; if the holder fails, its failure is kept for a
   few seconds (``…:error``) and reported by the waiters too, instead of every replica asking the
   endpoint again; if the holder dies, the lock expires and a waiter fetches.
4. **Redis down: every replica fends for itself.** A Redis error is logged once, the process fetches
   its own token and keeps it in memory, and leaves Redis alone for ``REDIS_PAUSE`` seconds (a client
   retrying a dead Redis would hold up every probe that needs a token), then tries it again.

**Rotated refresh tokens** (the refresh grant, where the endpoint hands out a new refresh token and the
old one stops working) are kept in memory and in ``<prefix>{<key>}:refresh`` (no TTL), and only the
lock holder uses one: the current refresh token goes to the endpoint once, whichever replica asks. A
rotated token is never written anywhere else (no log, no file). Without Redis, several replicas using
one rotating refresh token would invalidate each other's copy: give each its own, or use Redis.

**A 401 with a cached token** calls ``invalidate(key, token)``: the token is dropped from memory and, if
Redis still holds that same token, from Redis (compare and delete), so the next ``get`` fetches once
for everyone, however many callers saw the 401.

``on_fetch(label, succeeded)`` is called after every token request this process makes (a metric).
``on_secret(slot, values)`` is called with every access token and refresh token the cache learns
(fetched here or read from Redis), so the caller can register them with its redactor; ``slot`` names the
credential, and each call replaces the slot's previous values (they rotate).

Keys (``<key>`` is the caller's, e.g. ``<integration>:<TokenGrant.fingerprint()>``; the braces are a
Redis Cluster hash tag): ``:token`` (string, JSON, TTL), ``:lock`` (string, short TTL), ``:error``
(string, JSON, short TTL), ``:refresh`` (string, no TTL). Tokens sit in Redis in the clear, like the
rate-limit counters next to them: protect that Redis (ACL, TLS) as you protect the credentials.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio
from redis.exceptions import RedisError

from integration_kit.errors import ErrorClass
from integration_kit.oauth2 import Token, TokenError, TokenGrant, request_token

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "im:oauth2:"
POLL_INTERVAL = 0.05  # seconds between reads of a waiting replica
FAILURE_TTL = 5.0  # seconds a lock holder's failure is reported to the replicas that waited for it
LOCK_SLACK = 2.0  # the lock outlives one token request by this much
REDIS_PAUSE = 30.0  # seconds Redis is left alone after an error

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_INVALIDATE = """
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local ok, token = pcall(cjson.decode, value)
if ok and type(token) == 'table' and token['access_token'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

SecretSink = Callable[[str, Sequence[str]], None]
FetchSink = Callable[[str, bool], None]  # (label, succeeded) of every token request this process made


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """What ``get`` answered: the token; ``waited``: seconds this call spent obtaining it (0 from memory);
    ``source``: ``memory``, ``redis`` (another replica fetched it) or ``fetched`` (a token request)."""

    token: Token
    waited: float
    source: str


@dataclass(slots=True)
class _Stats:
    label: str
    fetches: int = 0
    failures: int = 0
    from_redis: int = 0
    last_error: str | None = None
    last_fetch_at: float | None = None


class TokenCache:
    """See the module docstring. One per process; ``close()`` cancels fetches in flight."""

    def __init__(
        self,
        *,
        redis: redis.asyncio.Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        on_secret: SecretSink | None = None,
        on_fetch: FetchSink | None = None,
        poll_interval: float = POLL_INTERVAL,
        failure_ttl: float = FAILURE_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._on_secret = on_secret
        self._on_fetch = on_fetch
        self._poll = poll_interval
        self._failure_ttl = failure_ttl
        self._clock = clock
        self._memory: dict[str, Token] = {}
        self._refresh: dict[str, str] = {}  # rotated refresh tokens, by key
        self._inflight: dict[str, asyncio.Task[Lease]] = {}
        self._stats: dict[str, _Stats] = {}
        self._redis_failing = False
        self._redis_pause_until = 0.0  # monotonic

    # ---- the API ---------------------------------------------------------------------------------

    async def get(
        self, key: str, grant: TokenGrant, session: aiohttp.ClientSession, *, label: str = "", ssl: Any = True
    ) -> Lease:
        """A fresh token for ``key``; raises ``TokenError`` (classified) when none can be had. ``label``
        names the credential in ``status()`` (the integration, say)."""
        started = time.monotonic()
        self._stats.setdefault(key, _Stats(label=label or key))
        token = self._memory.get(key)
        if token is not None and self._clock() < token.renew_at(grant.refresh_margin):
            return Lease(token=token, waited=0.0, source="memory")
        task = self._inflight.get(key)
        if task is None:
            # A fresh context: the fetch belongs to no caller (a caller's per-request context variables,
            # phase timing say, must not see the token endpoint's connection).
            task = asyncio.get_running_loop().create_task(
                self._obtain(key, grant, session, ssl), name=f"token:{key}", context=contextvars.Context()
            )
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        lease = await asyncio.shield(task)
        return Lease(token=lease.token, waited=time.monotonic() - started, source=lease.source)

    async def invalidate(self, key: str, token: Token) -> None:
        """The API refused ``token`` (a 401): forget it here and in Redis, unless already replaced."""
        current = self._memory.get(key)
        if current is not None and current.access_token == token.access_token:
            del self._memory[key]
        if self._redis is not None and self._redis_usable():
            try:
                await self._redis.eval(_INVALIDATE, 1, self._name(key, "token"), token.access_token)
            except (RedisError, OSError) as exc:
                self._redis_trouble(exc)

    def forget(self, keep: set[str]) -> None:
        """Drop what the cache holds for keys not in ``keep`` (credentials removed by a config reload)."""
        for table in (self._memory, self._refresh, self._stats):
            for key in [k for k in table if k not in keep]:
                del table[key]

    def status(self) -> list[dict[str, Any]]:
        """Per credential: when its token expires, how it was obtained; never a token."""
        out = []
        for key, stats in sorted(self._stats.items()):
            token = self._memory.get(key)
            out.append({
                "credential": stats.label, "expires_at": token.expires_at if token else None,
                "obtained_at": token.obtained_at if token else None, "fetches": stats.fetches,
                "failures": stats.failures, "from_redis": stats.from_redis, "last_error": stats.last_error,
                "last_fetch_at": stats.last_fetch_at,
            })
        return out

    def stats(self, key: str) -> _Stats | None:
        return self._stats.get(key)

    async def close(self, *, grace: float = 2.0) -> None:
        """Cancel the fetches in flight and wait for them at most ``grace`` seconds (a cancelled fetch
        still releases its Redis lock, and a Redis that hangs must not hold up a shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        self._inflight.clear()

    # ---- obtaining -------------------------------------------------------------------------------

    def _finished(self, key: str, task: asyncio.Task[Lease]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up on it

    async def _obtain(self, key: str, grant: TokenGrant, session: aiohttp.ClientSession, ssl: Any) -> Lease:
        if self._redis is not None and self._redis_usable():
            try:
                return await self._obtain_shared(self._redis, key, grant, session, ssl)
            except (RedisError, OSError) as exc:
                self._redis_trouble(exc)
        token = await self._fetch(key, grant, session, ssl, self._refresh.get(key))
        return Lease(token=token, waited=0.0, source="fetched")

    async def _obtain_shared(
        self, client: redis.asyncio.Redis, key: str, grant: TokenGrant, session: aiohttp.ClientSession, ssl: Any
    ) -> Lease:
        token_key, lock_key, error_key = (self._name(key, s) for s in ("token", "lock", "error"))
        owner = secrets.token_hex(8)
        lock_ms = max(1, round((grant.timeout + LOCK_SLACK) * 1000))
        give_up = time.monotonic() + grant.timeout + LOCK_SLACK
        while True:
            stored, failed = await client.mget(token_key, error_key)
            self._redis_back()
            token = Token.from_json(stored) if stored is not None else None
            if token is not None and self._clock() < token.renew_at(grant.refresh_margin):
                self._stats.setdefault(key, _Stats(label=key)).from_redis += 1
                self._remember(key, token)
                return Lease(token=token, waited=0.0, source="redis")
            if failed is not None:
                raise _stored_error(failed)
            if await client.set(lock_key, owner, nx=True, px=lock_ms):
                break
            if time.monotonic() >= give_up:  # the holder is stuck: fetch our own (its lock expires)
                owner = ""
                break
            await asyncio.sleep(self._poll)
        try:
            if owner:  # the holder before us may have written its token or its failure between our read and our lock
                stored, failed = await client.mget(token_key, error_key)
                token = Token.from_json(stored) if stored is not None else None
                if token is not None and self._clock() < token.renew_at(grant.refresh_margin):
                    self._stats.setdefault(key, _Stats(label=key)).from_redis += 1
                    self._remember(key, token)
                    return Lease(token=token, waited=0.0, source="redis")
                if failed is not None:
                    raise _stored_error(failed)
            refresh = self._refresh.get(key)
            if grant.grant_type == "refresh_token":
                rotated = await self._redis_call(client.get(self._name(key, "refresh")))
                if isinstance(rotated, bytes | str) and rotated:
                    refresh = rotated.decode() if isinstance(rotated, bytes) else rotated
                    self._refresh[key] = refresh
                    self._announce(key, "refresh", refresh)
            try:
                token = await self._fetch(key, grant, session, ssl, refresh)
            except TokenError as exc:
                if owner:
                    failure_ms = self._ttl_ms(self._failure_ttl)
                    await self._redis_call(client.set(error_key, _encode_error(exc), px=failure_ms))
                raise
            ttl = token.renew_at(grant.refresh_margin) - self._clock()
            if ttl > 0:
                await self._redis_call(client.set(token_key, token.to_json(), px=self._ttl_ms(ttl)))
            if token.refresh_token:
                await self._redis_call(client.set(self._name(key, "refresh"), token.refresh_token))
            return Lease(token=token, waited=0.0, source="fetched")
        finally:
            if owner:  # bounded: this may run while the fetch is being cancelled (shutdown)
                await self._redis_call(_within(LOCK_SLACK, client.eval(_RELEASE, 1, lock_key, owner)))

    async def _fetch(
        self, key: str, grant: TokenGrant, session: aiohttp.ClientSession, ssl: Any, refresh: str | None
    ) -> Token:
        stats = self._stats.setdefault(key, _Stats(label=key))
        stats.fetches += 1
        stats.last_fetch_at = self._clock()
        try:
            token = await request_token(session, grant, refresh_token=refresh, now=self._clock(), ssl=ssl)
        except TokenError as exc:
            stats.failures += 1
            stats.last_error = str(exc)
            if self._on_fetch is not None:
                self._on_fetch(stats.label, False)
            raise
        stats.last_error = None
        if self._on_fetch is not None:
            self._on_fetch(stats.label, True)
        if token.refresh_token:
            self._refresh[key] = token.refresh_token
            self._announce(key, "refresh", token.refresh_token)
        self._remember(key, token)
        return token

    def _remember(self, key: str, token: Token) -> None:
        self._announce(key, "access", token.access_token)
        self._memory[key] = token

    def _announce(self, key: str, kind: str, value: str) -> None:
        if self._on_secret is not None:
            self._on_secret(f"oauth2:{key}:{kind}", [value])

    # ---- Redis plumbing --------------------------------------------------------------------------

    def _name(self, key: str, part: str) -> str:
        return f"{self._prefix}{{{key}}}:{part}"

    @staticmethod
    def _ttl_ms(seconds: float) -> int:
        return max(1, round(seconds * 1000))

    async def _redis_call(self, awaitable: Any) -> Any:
        """A Redis write or read that may fail without failing the token: None on a Redis error."""
        try:
            return await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_trouble(exc)
            return None

    def _redis_usable(self) -> bool:
        return time.monotonic() >= self._redis_pause_until

    def _redis_trouble(self, exc: BaseException) -> None:
        if not self._redis_failing:
            log.warning("token cache: Redis unavailable (%s); each replica fetches its own tokens until it is back",
                        type(exc).__name__)
        self._redis_failing = True
        self._redis_pause_until = time.monotonic() + REDIS_PAUSE

    def _redis_back(self) -> None:
        if self._redis_failing:
            log.info("token cache: Redis is back; tokens are shared again")
        self._redis_failing = False


def _encode_error(exc: TokenError) -> str:
    error_class, detail = exc.failure
    return json.dumps({"class": str(error_class), "detail": detail, "status": exc.status})


def _stored_error(raw: bytes | str) -> TokenError:
    """The failure another replica's fetch ended with, as it reported it."""
    try:
        data = json.loads(raw)
        failure = (ErrorClass(data["class"]), str(data["detail"]))
        status = data.get("status")
    except (ValueError, TypeError, KeyError):
        return TokenError((ErrorClass.AUTH, "auth: token endpoint: failed (reported by another replica)"))
    return TokenError(failure, status=status if isinstance(status, int) else None)


async def _within(seconds: float, awaitable: Awaitable[Any]) -> Any:
    """``awaitable``, or TimeoutError after ``seconds`` (not asyncio.wait_for: see integration_kit.tasks)."""
    async with asyncio.timeout(seconds):
        return await awaitable


__all__ = ["DEFAULT_PREFIX", "REDIS_PAUSE", "Lease", "TokenCache"]
