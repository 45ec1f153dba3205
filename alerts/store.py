"""Persistence of alert state, the notification log, silences and notifier message refs.

In Redis when the daemon has one (hashes under a configurable prefix, default ``im:alerts:``), else in
memory. Both go through the same JSON encoding, so the memory store exercises the same code path.

    <prefix>state      hash  alert key → AlertState JSON
    <prefix>groups     hash  group key → GroupLog JSON (the notification log)
    <prefix>silences   hash  silence id → Silence JSON
    <prefix>refs       hash  "<notifier>|<group key>" → JSON object a notifier gave back (e.g. Slack ts)

Redis errors propagate (``redis.exceptions.RedisError``/``OSError``): the engine keeps its in-memory
copy, reports Redis down and writes again on the next evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from alerts.config import DEFAULT_KEY_PREFIX
from alerts.grouping import GroupLog
from alerts.model import Alert, AlertStatus, Severity
from alerts.silences import Silence
from alerts.state import AlertState

if TYPE_CHECKING:
    import redis.asyncio


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    return {
        "key": alert.key, "integration": alert.integration, "alert": alert.alert,
        "severity": str(alert.severity), "status": str(alert.status), "summary": alert.summary,
        "check": alert.check, "quota": alert.quota, "started_at": alert.started_at,
        "resolved_at": alert.resolved_at, "details": dict(alert.details),
        "error_classes": dict(alert.error_classes), "last_request": alert.last_request,
        "response_excerpt": alert.response_excerpt, "runbook_url": alert.runbook_url,
        "flapping": alert.flapping, "first_failure_at": alert.first_failure_at,
    }


def alert_from_dict(data: Mapping[str, Any]) -> Alert:
    return Alert(
        key=data["key"], integration=data["integration"], alert=data["alert"],
        severity=Severity(data["severity"]), status=AlertStatus(data["status"]), summary=data["summary"],
        check=data.get("check"), quota=data.get("quota"), started_at=float(data.get("started_at", 0.0)),
        resolved_at=data.get("resolved_at"), details=dict(data.get("details", {})),
        error_classes={k: int(v) for k, v in data.get("error_classes", {}).items()},
        last_request=data.get("last_request"), response_excerpt=data.get("response_excerpt"),
        runbook_url=data.get("runbook_url"), flapping=bool(data.get("flapping", False)),
        first_failure_at=data.get("first_failure_at"),
    )  # notes are not stored: they are re-read from the notes file when a message is built


def state_to_json(state: AlertState) -> str:
    return json.dumps({
        "key": state.key, "status": str(state.status), "pending_since": state.pending_since,
        "firing_since": state.firing_since, "last_true": state.last_true, "resolved_at": state.resolved_at,
        "transitions": list(state.transitions), "flapping": state.flapping,
        "alert": alert_to_dict(state.alert) if state.alert is not None else None,
    })


def state_from_json(text: str | bytes) -> AlertState:
    data = json.loads(text)
    return AlertState(
        key=data["key"], status=AlertStatus(data["status"]), pending_since=data.get("pending_since"),
        firing_since=data.get("firing_since"), last_true=data.get("last_true"),
        resolved_at=data.get("resolved_at"), transitions=tuple(data.get("transitions", ())),
        flapping=bool(data.get("flapping", False)),
        alert=alert_from_dict(data["alert"]) if data.get("alert") else None,
    )


def group_to_json(log: GroupLog) -> str:
    return json.dumps({"group_key": log.group_key, "created_at": log.created_at, "last_flush": log.last_flush,
                       "sent": dict(log.sent)})


def group_from_json(text: str | bytes) -> GroupLog:
    data = json.loads(text)
    return GroupLog(group_key=data["group_key"], created_at=float(data["created_at"]),
                    last_flush=data.get("last_flush"), sent=dict(data.get("sent", {})))


class AlertStore:
    """Redis-backed when ``redis`` is given, otherwise a process-local dict with the same behaviour."""

    def __init__(self, redis: redis.asyncio.Redis | None, prefix: str = DEFAULT_KEY_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix
        self._memory: dict[str, dict[str, str]] = {}

    @property
    def durable(self) -> bool:
        return self.redis is not None

    # -- hash primitives ------------------------------------------------------------------------
    async def _hgetall(self, name: str) -> dict[str, str]:
        if self.redis is None:
            return dict(self._memory.get(name, {}))
        raw = await self.redis.hgetall(self.prefix + name)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def _hget(self, name: str, field: str) -> str | None:
        if self.redis is None:
            return self._memory.get(name, {}).get(field)
        value = await self.redis.hget(self.prefix + name, field)
        return None if value is None else _text(value)

    async def _write(self, name: str, upserts: Mapping[str, str], deletes: Iterable[str]) -> None:
        deletes = [d for d in deletes if d not in upserts]
        if self.redis is None:
            table = self._memory.setdefault(name, {})
            table.update(upserts)
            for field in deletes:
                table.pop(field, None)
            return
        if not upserts and not deletes:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            if upserts:
                pipe.hset(self.prefix + name, mapping=dict[Any, Any](upserts))
            if deletes:
                pipe.hdel(self.prefix + name, *deletes)
            await pipe.execute()

    # -- alert state and notification log -------------------------------------------------------
    async def load_states(self) -> dict[str, AlertState]:
        return {k: state_from_json(v) for k, v in (await self._hgetall("state")).items()}

    async def save_states(self, upserts: Mapping[str, AlertState], deletes: Iterable[str] = ()) -> None:
        await self._write("state", {k: state_to_json(v) for k, v in upserts.items()}, deletes)

    async def load_groups(self) -> dict[str, GroupLog]:
        return {k: group_from_json(v) for k, v in (await self._hgetall("groups")).items()}

    async def save_groups(self, upserts: Mapping[str, GroupLog], deletes: Iterable[str] = ()) -> None:
        await self._write("groups", {k: group_to_json(v) for k, v in upserts.items()}, deletes)

    # -- silences -------------------------------------------------------------------------------
    async def load_silences(self) -> list[Silence]:
        items = [Silence.from_dict(json.loads(v)) for v in (await self._hgetall("silences")).values()]
        return sorted(items, key=lambda s: (s.starts_at, s.id))

    async def put_silence(self, silence: Silence) -> None:
        await self._write("silences", {silence.id: json.dumps(silence.to_dict())}, ())

    async def delete_silences(self, ids: Iterable[str]) -> None:
        await self._write("silences", {}, list(ids))

    # -- message refs a notifier gets back (e.g. Slack channel + ts, to update/thread later) ----------
    async def set_message_ref(self, notifier: str, group_key: str, ref: Mapping[str, Any] | None) -> None:
        field = f"{notifier}|{group_key}"
        if ref is None:
            await self._write("refs", {}, [field])
        else:
            await self._write("refs", {field: json.dumps(dict(ref))}, ())

    async def get_message_ref(self, notifier: str, group_key: str) -> dict[str, Any] | None:
        value = await self._hget("refs", f"{notifier}|{group_key}")
        return None if value is None else dict(json.loads(value))

    async def ping(self) -> None:
        if self.redis is not None:
            await self.redis.ping()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
