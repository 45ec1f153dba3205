"""Slack notifier, two modes (slack-sdk, async):

* bot token: the first notification of a group's incident is posted with chat.postMessage; later changes
  edit that message (chat.update) instead of posting again, and resolved alerts are also posted as a
  reply in its thread. Channel ID + ts per group key are kept in Redis (in memory without it) so a
  restart still updates and threads into the right message; the record names its incident
  (``Notification.incident``), so the next incident of the group never reuses it, and what changed while
  Redis could not be written wins over what Redis holds when it answers again (``ThreadStore``).
* incoming webhook: a new message per change (webhooks cannot edit or thread).

slack-sdk's retry handlers are switched off (``retry_handlers=[]``): its 429 handler does
``int(Retry-After)`` and crashes on ``1.5``, and its server-error handler never sees webhook 5xx. This
module only classifies failures into ``DeliveryError``; the Dispatcher waits and retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from alerts.message import SlackMessage, build_message
from alerts.model import Notification, Severity
from alerts.notifier_config import SlackConfig
from alerts.notifiers.base import DeliveryError, DeliveryReceipt, NotifierContext
from alerts.outbox import Fence, delivering_under
from integration_kit.retry import parse_retry_after
from integration_kit.tasks import stop

if TYPE_CHECKING:
    import redis.asyncio

    from integration_kit.redact import Redactor

log = logging.getLogger(__name__)

SLACK_PACE = 1.0  # Slack allows about one message per second per channel
THREAD_TTL = 14 * 86400  # forget a group's message after two weeks without changes
DEFAULT_RETRY_AFTER = 1.0  # a 429 without Retry-After (Slack always sends it; be safe anyway)

# ok:false errors that are Slack's own trouble: trying again later can help. Everything else
# (invalid_auth, channel_not_found, not_in_channel, invalid_blocks, missing_scope…) needs a human.
_TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout", "team_added_to_org"}
)
# chat.update cannot edit the stored message any more: post a fresh one instead.
_MESSAGE_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed", "is_archived"})


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list) else value)
    return None


def _rate_limited(what: str, headers: Mapping[str, Any] | None) -> DeliveryError:
    raw = _header(headers, "Retry-After")
    wait = parse_retry_after(raw, now=time.time())
    wait = DEFAULT_RETRY_AFTER if wait is None else wait
    return DeliveryError(f"{what}: rate limited (429), Retry-After {raw or 'absent'}", retryable=True, retry_after=wait)


def _connection_error(what: str, exc: BaseException, redactor: Redactor) -> DeliveryError:
    detail = redactor.text(str(exc)) or "no detail"
    return DeliveryError(f"{what}: {type(exc).__name__}: {detail}", retryable=True)


@dataclass(frozen=True, slots=True)
class GroupMessage:
    """The Slack message that represents a group's incident: where it is, and the alert states it last showed."""

    channel: str  # channel ID (chat.update needs the ID, not the #name)
    ts: str
    state: str = ""  # signature of the alerts it shows; the same again = a repeat notification
    incident: str = ""  # the incident it belongs to (Notification.incident): never reused by the next one


def state_signature(notification: Notification) -> str:
    parts = sorted(f"{a.key}={a.status}/{a.severity}/{int(a.flapping)}" for a in notification.alerts)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# KEYS: the group's thread record, the fence hash. ARGV: fence shard ('' = unfenced), token, channel ('' =
# delete the record), ts, state, incident, ttl. 0: refused (another replica owns the integration now).
_WRITE_THREAD = """
if ARGV[1] ~= '' and redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'channel', ARGV[3], 'ts', ARGV[4], 'state', ARGV[5], 'incident', ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
end
return 1
"""
REPLAY_RETRY = 1.0  # seconds between attempts to write back what changed while Redis was unreachable


@dataclass(slots=True)
class _Known:
    message: GroupMessage | None  # None: the group's thread was closed
    fence: Fence | None = None  # the token it was written under (alerts/outbox.py ``delivering_under``)


class ThreadStore:
    """group key → GroupMessage, in Redis (survives restarts) with an in-memory copy for Redis outages.

    Memory wins. What changed while Redis could not be written (a message posted, a thread closed) is
    kept in memory and replayed to Redis before anything else is read or written (and in the background
    until it is), so the record Redis still holds from before the outage (or the lack of one) never
    overrides what happened meanwhile. A record Redis no longer has while this process knows it for the
    same incident (Redis came back empty) is written back too: the resolve still lands in its thread.

    Writes go under the fencing token of the notification being delivered (``delivering_under``): a
    replica that lost the integration while its send was under way cannot overwrite the new owner's record.
    """

    def __init__(self, redis: redis.asyncio.Redis | None, prefix: str, fence_key: str = "") -> None:
        self._redis = redis
        self._prefix = prefix
        self._fence_key = fence_key
        self._write = redis.register_script(_WRITE_THREAD) if redis is not None else None
        self._memory: dict[str, _Known] = {}  # every record this process wrote or read
        self._unsynced: set[str] = set()  # changed here, not yet written to Redis
        self._retry: asyncio.Task[None] | None = None

    async def get(self, group_key: str, incident: str) -> GroupMessage | None:
        """The message of this incident of the group; None for none, or an earlier incident's."""
        message = await self._read(group_key, incident)
        if message is not None and message.incident != incident:
            log.info("slack: the stored message of group %s belongs to an earlier incident; posting a new one",
                     group_key)
            return None
        return message

    def _known(self, group_key: str) -> GroupMessage | None:
        known = self._memory.get(group_key)
        return None if known is None else known.message

    async def _read(self, group_key: str, incident: str) -> GroupMessage | None:
        if self._redis is None or not await self._replay() or group_key in self._unsynced:
            return self._known(group_key)
        try:
            raw = await self._redis.hgetall(self._prefix + group_key)
        except Exception as exc:  # Redis down: the in-memory copy is the best we have
            log.warning("slack thread store: Redis read failed (%s); using memory", type(exc).__name__)
            return self._known(group_key)
        fields = {_s(k): _s(v) for k, v in raw.items()}
        if "channel" in fields and "ts" in fields:
            message = GroupMessage(fields["channel"], fields["ts"], fields.get("state", ""), fields.get("incident", ""))
            self._memory[group_key] = _Known(message, delivering_under.get())
            return message
        known = self._known(group_key)
        if known is not None and known.incident == incident:
            log.warning("slack thread store: Redis no longer has the message of group %s (restarted empty?); "
                        "writing back the one this process knows", group_key)
            await self._change(group_key, known)
            return known
        return None

    async def set(self, group_key: str, message: GroupMessage) -> None:
        await self._change(group_key, message)

    async def delete(self, group_key: str) -> None:
        await self._change(group_key, None)

    async def _change(self, group_key: str, message: GroupMessage | None) -> None:
        self._memory[group_key] = _Known(message, delivering_under.get())
        self._unsynced.add(group_key)
        if self._redis is not None and not await self._replay():
            self._retry_later()

    async def _replay(self) -> bool:
        """Write what changed here and is not in Redis yet; True when Redis is in step with memory."""
        assert self._write is not None
        for group_key in sorted(self._unsynced):
            known = self._memory[group_key]
            message, fence = known.message, known.fence
            args: list[str | int] = [fence.shard if fence else "", fence.token if fence else 0,
                                     *(("", "", "", "") if message is None else
                                       (message.channel, message.ts, message.state, message.incident)), THREAD_TTL]
            try:
                written = await self._write(keys=[self._prefix + group_key, self._fence_key], args=args)
            except Exception as exc:
                log.warning("slack thread store: Redis write failed (%s); kept in memory, written when Redis "
                            "answers", type(exc).__name__)
                return False
            self._unsynced.discard(group_key)
            if not written:
                log.warning("slack thread store: the record of group %s not written: another replica owns its "
                            "integration now (fencing token %s superseded)", group_key, fence)
                self._memory.pop(group_key, None)
        return True

    async def synced(self) -> bool:
        return self._redis is None or await self._replay()

    def _retry_later(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._replay_until_done(), name="slack-thread-replay")

    async def _replay_until_done(self) -> None:
        """While Redis is unreachable: write back as soon as it answers, not only at the next send (another
        replica may be the one to send next, and it reads the record from Redis)."""
        while self._unsynced:
            await asyncio.sleep(REPLAY_RETRY)
            await self._replay()

    async def close(self) -> None:
        await stop(self._retry)
        self._retry = None


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _SlackBase:
    name = "slack"
    min_interval = SLACK_PACE

    def __init__(self, config: SlackConfig, context: NotifierContext) -> None:
        self._config = config
        self._redactor = context.redactor
        self.min_severity: Severity = config.min_severity
        secrets = [s.get_secret_value() for s in (config.token, config.webhook_url) if s is not None]
        self._redactor.add(secrets)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession belongs to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._config.timeout))
        return self._session

    def _message(self, notification: Notification) -> SlackMessage:
        return build_message(notification, self._redactor)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


class SlackBotNotifier(_SlackBase):
    """Bot-token mode: post, then update the same message, resolve in its thread."""

    def __init__(self, config: SlackConfig, context: NotifierContext) -> None:
        super().__init__(config, context)
        assert config.token is not None and config.channel is not None  # SlackConfig validated the mode
        self._token = config.token.get_secret_value()
        self._channel = config.channel
        self.channel_key: str | None = f"slack:{config.channel}"
        self._threads = ThreadStore(context.redis, f"{context.key_prefix}slack:thread:", f"{context.key_prefix}fence")
        self._client: AsyncWebClient | None = None

    async def close(self) -> None:
        await self._threads.close()
        await super().close()

    async def synced(self) -> bool:
        """The thread records written while Redis was unreachable are in Redis now (the dispatcher asks)."""
        return await self._threads.synced()

    def _web(self) -> AsyncWebClient:
        session = self._http()
        if self._client is None or self._client.session is not session:
            kwargs: dict[str, Any] = {"token": self._token, "session": session, "retry_handlers": []}
            if self._config.base_url:
                kwargs["base_url"] = self._config.base_url
            self._client = AsyncWebClient(**kwargs)
        return self._client

    async def verify(self) -> str | None:
        """What is wrong with the setup for good, as Slack says when asked once whether it accepts the token
        (``auth.test``): a rejected token makes the monitor unready from the start, not only when the first
        alert fails to go out. None when it is accepted, or when Slack cannot be asked now (the sends retry)."""
        try:
            await self._call("auth.test", self._web().auth_test)
        except DeliveryError as exc:
            return None if exc.retryable else exc.reason
        return None

    async def _call(self, method: str, call: Callable[..., Awaitable[Any]], **kwargs: Any) -> Any:
        try:
            return await call(**kwargs)
        except SlackApiError as exc:
            raise self._api_error(method, exc) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _connection_error(method, exc, self._redactor) from None

    def _api_error(self, method: str, exc: SlackApiError) -> DeliveryError:
        response = exc.response
        status = getattr(response, "status_code", 0) or 0
        data = response.data if isinstance(getattr(response, "data", None), dict) else {}
        error = str(data.get("error") or f"http_{status}")
        if status == 429 or error == "ratelimited":
            return _rate_limited(method, getattr(response, "headers", None))
        if status >= 500 or error in _TRANSIENT_ERRORS:
            return DeliveryError(f"{method}: {error} (HTTP {status})", retryable=True)
        needed = f", needs scope {data['needed']}" if data.get("needed") else ""
        reason = self._redactor.text(f"{method}: {error}{needed}")
        return DeliveryError(reason, retryable=False, code=error)

    async def _post(self, message: SlackMessage, channel: str, thread_ts: str | None = None) -> tuple[str, str]:
        web = self._web()
        kwargs: dict[str, Any] = {"channel": channel, "text": message.text, "blocks": message.blocks}
        if thread_ts is not None:
            kwargs["thread_ts"] = thread_ts
        response = await self._call("chat.postMessage", web.chat_postMessage, **kwargs)
        return str(response["channel"]), str(response["ts"])

    async def send(self, notification: Notification) -> DeliveryReceipt:
        message = self._message(notification)
        key, state = notification.group_key, state_signature(notification)
        stored = None if notification.is_test else await self._threads.get(key, notification.incident)
        if stored is not None:
            try:
                web = self._web()
                await self._call(
                    "chat.update", web.chat_update,
                    channel=stored.channel, ts=stored.ts, text=message.text, blocks=message.blocks,
                )
            except DeliveryError as exc:
                if exc.code not in _MESSAGE_GONE:
                    raise
                log.info("slack: message of group %s can no longer be edited (%s); posting a new one", key, exc.reason)
                stored = None
        if stored is None:
            channel, ts = await self._post(message, self._channel)
            if notification.firing and not notification.is_test:
                await self._threads.set(key, GroupMessage(channel, ts, state, notification.incident))
            return DeliveryReceipt(notifier=self.name, action="posted", channel=channel, ts=ts)
        # An edit changes the message silently; a thread reply is what notifies people: for resolves,
        # and for repeats of an unchanged state (repeat_interval: "still firing").
        action = "updated"
        if notification.resolved:
            resolved = replace(notification, alerts=notification.resolved)
            await self._post(self._message(resolved), stored.channel, thread_ts=stored.ts)
            action = "threaded"
        elif state == stored.state:
            await self._post(message, stored.channel, thread_ts=stored.ts)
            action = "threaded"
        if notification.firing:
            await self._threads.set(key, replace(stored, state=state))  # also refreshes the TTL
        else:
            await self._threads.delete(key)  # the next incident of this group starts a new message
        return DeliveryReceipt(notifier=self.name, action=action, channel=stored.channel, ts=stored.ts)


class SlackWebhookNotifier(_SlackBase):
    """Incoming-webhook mode: one new message per notification."""

    def __init__(self, config: SlackConfig, context: NotifierContext) -> None:
        super().__init__(config, context)
        assert config.webhook_url is not None  # SlackConfig validated the mode
        self._url = config.webhook_url.get_secret_value()
        # The webhook's URL is a secret; a digest of it names its channel (what it posts to) without it.
        self.channel_key: str | None = f"slack-webhook:{hashlib.sha256(self._url.encode()).hexdigest()[:16]}"
        self._client: AsyncWebhookClient | None = None

    def _hook(self) -> AsyncWebhookClient:
        session = self._http()
        if self._client is None or self._client.session is not session:
            self._client = AsyncWebhookClient(self._url, session=session, retry_handlers=[])
        return self._client

    async def send(self, notification: Notification) -> DeliveryReceipt:
        message = self._message(notification)
        try:
            response = await self._hook().send(text=message.text, blocks=message.blocks)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _connection_error("webhook", exc, self._redactor) from None
        status, body = response.status_code, (response.body or "").strip()
        if status == 200:
            return DeliveryReceipt(notifier=self.name, action="webhook")
        if status == 429:
            raise _rate_limited("webhook", response.headers)
        detail = self._redactor.text(body[:200]) or "no body"
        raise DeliveryError(f"webhook: HTTP {status}: {detail}", retryable=status >= 500)


def build_slack(config: SlackConfig, context: NotifierContext) -> SlackBotNotifier | SlackWebhookNotifier:
    return SlackBotNotifier(config, context) if config.token is not None else SlackWebhookNotifier(config, context)
