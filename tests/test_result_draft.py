"""A ``CheckResultDraft`` frozen in place is a ``CheckResult`` like one built by the constructor: the same
type, equal, printed the same, immutable, replaceable and picklable; and the probes' results (built as
drafts) have every field set."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from result_strategies import result_fields
from targets import Reply, Target

from checks.base import ProbeContext
from checks.http import HttpCheckConfig, probe
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult, CheckResultDraft

FIELDS = [f.name for f in dataclasses.fields(CheckResult)]

def drafted(values: dict[str, Any]) -> CheckResult:
    draft = CheckResultDraft()
    for name, value in values.items():
        setattr(draft, name, value)
    return draft.freeze()


def test_the_draft_has_the_results_fields() -> None:
    assert CheckResultDraft.__slots__ == CheckResult.__slots__
    assert list(CheckResultDraft.__annotations__) == FIELDS


@settings(max_examples=200)
@given(result_fields, st.booleans())
def test_a_frozen_draft_is_the_constructors_result(values: dict[str, Any], flip: bool) -> None:
    built, fast = CheckResult(**values), drafted(values)
    assert type(fast) is CheckResult
    assert fast == built and repr(fast) == repr(built)
    assert pickle.loads(pickle.dumps(fast)) == built
    assert dataclasses.replace(fast, ok=flip) == dataclasses.replace(built, ok=flip)
    assert fast.retries == built.retries
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.ok = flip  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del fast.detail  # type: ignore[misc]


async def test_probe_results_have_every_field_set(target: Target) -> None:
    """A field the probe forgot to set on its draft would be an unset slot: reading it raises."""
    target.route("/ok", Reply(json={"id": 1}, headers={"X-RateLimit-Remaining": "7"}))
    target.route("/down", Reply(status=503, body="busy"))
    redactor = Redactor()
    for path in ("/ok", "/down"):
        check = HttpCheckConfig.model_validate({"name": "t", "kind": "http", "url": target.url(path)})
        result = await probe(check, ProbeContext(integration="acme", redactor=redactor))
        assert type(result) is CheckResult
        values = {name: getattr(result, name) for name in FIELDS}
        assert CheckResult(**values) == result
        assert result.ok is (path == "/ok")
