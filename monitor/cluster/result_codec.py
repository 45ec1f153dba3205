"""Check results as JSON, for the trip from the replica that probed to the one that owns the integration.

Results travel in batches: one stream entry carries every result a replica sends to one owner in one
flush (``monitor.cluster.streams``), as a JSON array of ``[hops, result]`` pairs. A pair that cannot be
read is skipped and counted, the others still arrive.

Each result carries where its check pointed when it ran (``tf``: ``CheckConfigBase.target_fingerprint``, a
digest of the check's kind and request URLs, never the URLs), so that its integration's owner can drop a
result of an endpoint a reload has pointed the check away from (``ResultStreams``: counted as ``stale``).

Text that may quote a secret (the detail, the response excerpt) is redacted before it leaves the process
(the request summary already is), so nothing secret is ever written to Redis. Unknown fields are ignored
and missing ones take their default, so replicas of neighbouring versions can talk during a rolling
upgrade: a result without ``tf`` (from a replica that predates it) is taken as before, whatever its check
points at now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from integration_kit.errors import ErrorClass
from integration_kit.results import CheckResult, RequestSummary, StepResult

if TYPE_CHECKING:
    from integration_kit.redact import Redactor


# A result on its way: (result, hops: how often it was passed on already, the fingerprint of where its check
# pointed when it ran: None when unknown, from a replica that predates it).
Travelling = tuple[CheckResult, int, str | None]


def encode_batch(items: Sequence[Travelling], redactor: Redactor) -> str:
    return json.dumps([[hops, _encode(result, redactor, target)] for result, hops, target in items],
                      separators=(",", ":"))


def decode_batch(text: str | bytes) -> tuple[list[Travelling], int]:
    """The results of a batch in their order, and how many of its pairs could not be read. ValueError when
    ``text`` is not a batch at all."""
    doc = json.loads(text)
    if not isinstance(doc, list):
        raise ValueError("not a JSON array")
    items: list[Travelling] = []
    unreadable = 0
    for pair in doc:
        try:
            hops, doc = pair
            result = _decode(doc)  # (a mapping, then)
            target = doc.get("tf")
            items.append((result, int(hops), None if target is None else str(target)))
        except (ValueError, KeyError, TypeError, AttributeError):
            unreadable += 1
    return items, unreadable


def _encode(result: CheckResult, redactor: Redactor, target: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "i": result.integration, "c": result.check, "k": result.kind, "ok": result.ok,
        "e": None if result.error_class is None else result.error_class.value,
        "d": redactor.text(result.detail) if result.detail else "",
        "at": result.started_at, "dur": result.duration, "tot": result.total_duration, "n": result.attempts,
        "ac": [None if c is None else c.value for c in result.attempt_classes],
    }
    optional = {
        "sc": result.status_code, "ph": dict(result.phases) or None, "tls": result.tls_expiry,
        "rx": redactor.text(result.response_excerpt) if result.response_excerpt else None,
        "rl": [list(pair) for pair in result.rate_limit_headers] or None, "bb": result.body_bytes,
        "rb": [list(pair) for pair in result.rate_limit_body] or None,
        "st": [_encode_step(step, redactor) for step in result.steps] or None,
    }
    doc.update({k: v for k, v in optional.items() if v is not None})
    if target is not None:
        doc["tf"] = target
    if result.request is not None:
        req = result.request
        doc["rq"] = {"m": req.method, "u": req.url, "h": dict(req.headers), "b": req.body_excerpt}
    return doc


def _decode(doc: Any) -> CheckResult:
    """ValueError (or KeyError, TypeError, AttributeError) on anything that is not a result ``_encode`` wrote."""
    if not isinstance(doc, Mapping):
        raise ValueError("not a JSON object")
    request = None
    if isinstance(rq := doc.get("rq"), Mapping):
        request = RequestSummary(method=str(rq["m"]), url=str(rq["u"]), headers=dict(rq.get("h") or {}),
                                 body_excerpt=rq.get("b"))
    return CheckResult(
        integration=str(doc["i"]), check=str(doc["c"]), kind=str(doc["k"]), ok=bool(doc["ok"]),
        error_class=_error_class(doc.get("e")), detail=str(doc.get("d", "")), started_at=float(doc["at"]),
        duration=float(doc["dur"]), total_duration=float(doc["tot"]), attempts=int(doc.get("n", 1)),
        attempt_classes=tuple(_error_class(c) for c in doc.get("ac") or ()),
        status_code=None if doc.get("sc") is None else int(doc["sc"]),
        phases={str(k): float(v) for k, v in (doc.get("ph") or {}).items()},
        tls_expiry=None if doc.get("tls") is None else float(doc["tls"]),
        request=request, response_excerpt=doc.get("rx"),
        rate_limit_headers=tuple((str(n), str(v)) for n, v in doc.get("rl") or ()),
        body_bytes=None if doc.get("bb") is None else int(doc["bb"]),
        rate_limit_body=tuple((str(n), str(v)) for n, v in doc.get("rb") or ()),
        steps=tuple(_decode_step(step) for step in doc.get("st") or ()),
    )


def _encode_step(step: StepResult, redactor: Redactor) -> dict[str, Any]:
    return {"n": step.name, "cl": step.cleanup, "ok": step.ok, "sk": step.skipped,
            "e": None if step.error_class is None else step.error_class.value,
            "d": redactor.text(step.detail) if step.detail else "", "sc": step.status_code, "dur": step.duration,
            "a": step.attempts, "ph": dict(step.phases)}


def _decode_step(doc: Mapping[str, Any]) -> StepResult:
    return StepResult(
        name=str(doc["n"]), cleanup=bool(doc.get("cl", False)), ok=bool(doc["ok"]), skipped=bool(doc.get("sk", False)),
        error_class=_error_class(doc.get("e")), detail=str(doc.get("d", "")),
        status_code=None if doc.get("sc") is None else int(doc["sc"]), duration=float(doc.get("dur", 0.0)),
        attempts=int(doc.get("a", 0)), phases={str(k): float(v) for k, v in (doc.get("ph") or {}).items()},
    )


def _error_class(value: Any) -> ErrorClass | None:
    return None if value is None else ErrorClass(value)
