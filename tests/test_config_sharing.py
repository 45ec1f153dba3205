"""Equal parts of the checks' configs are one object after loading (monitor/settings/sharing.py), and
nothing anyone can read of the config changes: values, the fields given, dumps, what is derived."""

from __future__ import annotations

import pytest

import monitor.settings
from monitor.settings import Config, parse_config

TEXT = """
integrations:
  a:
    checks:
      - {name: plain, kind: http, url: "http://127.0.0.1:1/a"}
      - {name: plain2, kind: http, url: "http://127.0.0.1:1/b", interval: 60s}
      - {name: again, kind: http, url: "http://127.0.0.1:1/i"}
      - {name: given, kind: http, url: "http://127.0.0.1:1/c", retry: {attempts: 1}, expect: {status: 200}}
      - {name: three, kind: http, url: "http://127.0.0.1:1/d", retry: {attempts: 3}}
      - {name: json, kind: http, url: "http://127.0.0.1:1/e", expect: {json: {"$.ok": {equals: true}}}}
      - {name: json2, kind: http, url: "http://127.0.0.1:1/f", expect: {json: {"$.ok": {equals: true}}}}
  b:
    auth: {kind: basic, username: u, password: "pw-integration-b"}
    checks:
      - {name: plain, kind: http, url: "http://127.0.0.1:1/g"}
      - {name: timed, kind: http, url: "http://127.0.0.1:1/h", retry: {attempts: 3}, timeout: 3s}
"""


def checks(config: Config) -> dict[str, object]:
    return {f"{i}/{c.name}": c for i, c in config.iter_checks()}


@pytest.fixture
def unshared(monkeypatch: pytest.MonkeyPatch) -> Config:
    """The same config loaded as before sharing: every part its own object."""
    monkeypatch.setattr(monitor.settings, "share_equal_parts", lambda models: None)
    return parse_config(TEXT, env={})


def test_equal_parts_are_one_object_across_checks_and_integrations() -> None:
    c = checks(parse_config(TEXT, env={}))
    assert c["a/plain"].retry is c["a/plain2"].retry is c["b/plain"].retry  # type: ignore[attr-defined]
    assert c["a/plain"].expect is c["b/plain"].expect  # type: ignore[attr-defined]
    assert c["a/three"].retry is c["b/timed"].retry  # type: ignore[attr-defined]
    # The same field-name sets: one set (checks given name, kind and url only; b's also inherit auth).
    assert c["a/plain"].__pydantic_fields_set__ is c["a/again"].__pydantic_fields_set__  # type: ignore[attr-defined]
    assert c["b/plain"].__pydantic_fields_set__ is not c["a/plain"].__pydantic_fields_set__  # type: ignore[attr-defined]


def test_parts_that_differ_in_what_was_given_or_in_value_stay_apart() -> None:
    c = checks(parse_config(TEXT, env={}))
    # Equal values, but given explicitly: model_fields_set differs, so they are not interchangeable.
    assert c["a/given"].retry == c["a/plain"].retry  # type: ignore[attr-defined]
    assert c["a/given"].retry is not c["a/plain"].retry  # type: ignore[attr-defined]
    assert c["a/given"].retry.model_fields_set == {"attempts"}  # type: ignore[attr-defined]
    assert c["a/plain"].retry.model_fields_set == set()  # type: ignore[attr-defined]
    assert c["a/three"].retry is not c["a/plain"].retry  # type: ignore[attr-defined]
    # A part holding a non-empty mapping (JSON assertions) is left alone.
    assert c["a/json"].expect == c["a/json2"].expect  # type: ignore[attr-defined]
    assert c["a/json"].expect is not c["a/json2"].expect  # type: ignore[attr-defined]


def test_everything_readable_is_as_without_sharing(unshared: Config) -> None:
    shared = parse_config(TEXT, env={})
    assert shared == unshared
    assert shared.model_dump() == unshared.model_dump()
    assert shared.model_dump(exclude_unset=True) == unshared.model_dump(exclude_unset=True)
    mine, theirs = checks(shared), checks(unshared)
    for name, check in mine.items():
        other = theirs[name]
        assert check.model_fields_set == other.model_fields_set, name  # type: ignore[attr-defined]
        assert check.retry.policy == other.retry.policy, name  # type: ignore[attr-defined]
        assert check.expect.compiled_json == other.expect.compiled_json, name  # type: ignore[attr-defined]
        assert check.request_plan.url == other.request_plan.url, name  # type: ignore[attr-defined]
        assert dict(check.request_plan.headers) == dict(other.request_plan.headers), name  # type: ignore[attr-defined]


def test_a_copy_with_an_update_does_not_touch_the_shared_names() -> None:
    c = checks(parse_config(TEXT, env={}))
    plain, other = c["a/plain"], c["b/plain"]
    copied = plain.model_copy(update={"interval": 5.0})  # type: ignore[attr-defined]
    assert "interval" in copied.model_fields_set
    assert "interval" not in plain.model_fields_set  # type: ignore[attr-defined]
    assert "interval" not in other.model_fields_set  # type: ignore[attr-defined]
