"""What a pass remembers (``alerts/memo.py``) belongs to the engine that made it.

Several engines live in one process (tests build several; a restart builds a new one): two engines judging
the same alert keys from different results must each keep their own condition, content, outgoing alert and
stored text, so that a pass that changes nothing makes nothing anew in either, however their passes
interleave; and nothing one engine made is kept once it is gone.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from test_alert_engine import Clock, Sink
from test_alert_pass_memos import config, result

from alerts import codec, routing, stepping
from alerts.engine import AlertEngine
from alerts.memo import LastMade
from alerts.model import Alert, AlertStatus
from alerts.rules import Condition, error_rate
from alerts.store import AlertStore
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from monitor.metrics import Metrics

MAKERS: dict[str, tuple[Any, str]] = {  # what each memo saves making, where it is looked up
    "condition": (error_rate, "_burning"),
    "content": (stepping, "alert_from_condition"),
    "outgoing": (routing, "outgoing"),
    "stored text": (codec, "alert_to_dict"),
}


def _counting(made: Counter[str], name: str, make: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        made[name] += 1
        return make(*args, **kwargs)
    return counted


def _engine(clock: Clock) -> AlertEngine:
    return AlertEngine(config(0), metrics=Metrics(), redactor=Redactor(), sink=Sink(), clock=clock,
                       store=AlertStore(None), autorun=False)


def _fail(engine: AlertEngine, clock: Clock, error: ErrorClass, detail: int, runs: int) -> None:
    for _ in range(runs):
        clock.now += 15
        for integration in ("acme", "beta"):
            for check in ("api", "login"):
                engine.on_result(result(integration, check, clock.now, error, detail, 0.1))


def test_two_engines_judging_the_same_alerts_from_other_results_keep_what_each_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def run() -> None:
        clocks = (Clock(), Clock())
        engines = (_engine(clocks[0]), _engine(clocks[1]))
        for engine in engines:
            await engine.start()
        # The same checks fail in both, with other classes and details: the same alert keys, other inputs.
        _fail(engines[0], clocks[0], ErrorClass.HTTP_5XX, 0, 12)
        _fail(engines[1], clocks[1], ErrorClass.TIMEOUT, 1, 12)
        for _ in range(3):  # the alerts fire (for: 0) and are told
            for engine, clock in zip(engines, clocks, strict=True):
                clock.now += 1
                await engine.evaluate()
        firing = [{k for k, s in e.states.items() if s.status is AlertStatus.FIRING} for e in engines]
        assert firing[0] == firing[1]
        assert any("/error_rate/" in key for key in firing[0])
        texts = [{k: json.loads(v)["alert"] for k, v in e.store._memory["state"].items()} for e in engines]
        assert all("5" in texts[0][k]["summary"] or "http_5xx" in json.dumps(texts[0][k]) for k in firing[0])
        assert all("timeout" in json.dumps(texts[1][k]) for k in firing[1])

        made: Counter[str] = Counter()
        for name, (module, attr) in MAKERS.items():
            monkeypatch.setattr(module, attr, _counting(made, name, getattr(module, attr)))
        contents = [{k: e.states[k].alert for k in firing[0]} for e in engines]
        for _ in range(3):  # nothing new: each pass of either engine makes nothing anew
            for engine, clock in zip(engines, clocks, strict=True):
                clock.now += 1
                await engine.evaluate()
        assert made == Counter()
        assert [{k: e.states[k].alert for k in firing[0]} for e in engines] == contents
        assert all(contents[0][k] is engines[0].states[k].alert for k in firing[0])
        for engine in engines:
            await engine.close()

    asyncio.run(run())


def _made_by_rules_and_engines() -> set[int]:
    return {id(o) for o in gc.get_objects() if isinstance(o, (AlertEngine, LastMade, Condition, Alert))}


def test_nothing_an_engine_made_is_kept_once_it_is_gone() -> None:
    """The memos are the engine's: once it is gone, the conditions and alert contents it made are too."""
    async def run() -> None:
        clock = Clock()
        engine = _engine(clock)
        await engine.start()
        _fail(engine, clock, ErrorClass.HTTP_5XX, 0, 12)
        for _ in range(2):
            clock.now += 1
            await engine.evaluate()
        assert any(s.status is AlertStatus.FIRING for s in engine.states.values())
        await engine.close()

    gc.collect()
    before = _made_by_rules_and_engines()
    asyncio.run(run())
    gc.collect()
    assert _made_by_rules_and_engines() - before == set()


def test_a_memo_gives_a_value_back_only_for_equal_inputs_and_stays_bounded() -> None:
    memo: LastMade[str, str] = LastMade(limit=2)
    inputs = ({"a": 1}, 2.0)
    assert memo.get("k", inputs) is None
    assert memo.put("k", inputs, "made") == "made"
    assert memo.get("k", inputs) == "made"
    assert memo.get("k", ({"a": 1}, 2.0)) == "made"  # equal inputs, other objects
    assert memo.get("k", ({"a": 2}, 2.0)) is None
    assert memo.get("other", inputs) is None
    memo.put("j", 1, "j")
    memo.put("j", 2, "j2")  # a key made again: its entry replaced, the memo not emptied
    assert len(memo) == 2 and memo.get("k", inputs) == "made"
    memo.put("third", 1, "3")  # full: emptied before it takes another key
    assert len(memo) == 1 and memo.get("third", 1) == "3" and memo.get("k", inputs) is None
    memo.put("k", inputs, "made")
    memo.keep_only({"k"})
    assert len(memo) == 1 and memo.get("k", inputs) == "made"
    memo.forget("k")
    assert len(memo) == 0
    with pytest.raises(ValueError, match="LastMade limit: 0, expected at least 1"):
        LastMade(limit=0)
