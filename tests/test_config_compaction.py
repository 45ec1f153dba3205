"""A parsed config is copied away from the garbage its parse left (monitor/settings/compact.py), and nothing
anyone can read of it changes: values, dumps, the fields given, what is derived and cached, which parts are
one object (monitor/settings/sharing.py), the secrets it holds."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import monitor.settings
import monitor.settings.compact
from monitor.settings import Config, load_config, parse_config

# The bundled demo's config: every probe kind, flows, OAuth2, quotas, webhooks, traffic, alert routing.
DEMO = Path(str(resources.files("monitor.demo").joinpath("config.yaml")))
ENV = {
    "DEMO_VENDOR_URL": "http://127.0.0.1:1", "DEMO_VENDOR_TLS_URL": "https://127.0.0.1:2",
    "DEMO_LISTEN": "127.0.0.1:9478", "DEMO_KEY_PREFIX": "imtest", "REDIS_URL": "redis://127.0.0.1:1/0",
    "DEMO_PAYMENTS_KEY": "sk_test_compaction_secret_0001",
}
# Checks that share their default parts (sharing.py), beside ones given their own.
SHARED = """
integrations:
  a:
    checks:
      - {name: plain, kind: http, url: "http://127.0.0.1:1/a"}
      - {name: plain2, kind: http, url: "http://127.0.0.1:1/b", interval: 60s}
      - {name: given, kind: http, url: "http://127.0.0.1:1/c", retry: {attempts: 1}, expect: {status: 200}}
  b:
    auth: {kind: basic, username: u, password: "pw-integration-b"}
    checks:
      - {name: plain, kind: http, url: "http://127.0.0.1:1/g"}
"""


def parsed_both_ways(monkeypatch: pytest.MonkeyPatch, load: Any) -> tuple[Config, Config]:
    """(as the daemon loads it, as parsed without the copy). The first is a copy indeed: a config pickle
    could not copy would be kept as parsed, and its memory with it, without a word."""
    copies: list[object] = []
    loads = monitor.settings.compact.pickle.loads

    def copied(image: bytes) -> object:
        copies.append(copy := loads(image))
        return copy

    with monkeypatch.context() as patch:
        patch.setattr(monitor.settings.compact.pickle, "loads", copied)
        config = load()
    assert copies == [config] and copies[0] is config
    with monkeypatch.context() as patch:
        patch.setattr(monitor.settings, "compacted", lambda parse: parse())
        plain = load()
    return config, plain


def demo() -> Config:
    return load_config(DEMO, env=ENV)


def models(node: Any, path: str = "config") -> Iterator[tuple[str, Any]]:
    """Every model, list and dict of a config with its path, depth first, in a fixed order."""
    if isinstance(node, BaseModel):
        yield path, node
        for name in type(node).model_fields:
            yield from models(getattr(node, name), f"{path}.{name}")
    elif isinstance(node, list | tuple):
        yield path, node
        for i, item in enumerate(node):
            yield from models(item, f"{path}[{i}]")
    elif isinstance(node, dict):
        yield path, node
        for key, item in node.items():
            yield from models(item, f"{path}[{key!r}]")


@pytest.mark.parametrize("load", [demo, lambda: parse_config(SHARED, env={})], ids=["demo", "shared-parts"])
def test_the_copy_reads_as_the_parsed_config(monkeypatch: pytest.MonkeyPatch, load: Any) -> None:
    config, plain = parsed_both_ways(monkeypatch, load)
    assert config is not plain
    assert config == plain
    assert config.model_dump() == plain.model_dump()
    assert config.model_dump(exclude_unset=True) == plain.model_dump(exclude_unset=True)
    assert config.model_dump_json() == plain.model_dump_json()
    assert [(i, c.name) for i, c in config.iter_checks()] == [(i, c.name) for i, c in plain.iter_checks()]
    mine, theirs = list(models(config)), list(models(plain))
    assert [path for path, _ in mine] == [path for path, _ in theirs]
    for (path, ours), (_, other) in zip(mine, theirs, strict=True):
        assert type(ours) is type(other), path
        if isinstance(ours, BaseModel):
            assert ours.model_fields_set == other.model_fields_set, path
            assert ours.__pydantic_private__ == other.__pydantic_private__, path
            assert ours.__pydantic_extra__ == other.__pydantic_extra__, path
            # What the parse cached on a model (validators may ask for derived values) came along too.
            assert set(vars(ours)) == set(vars(other)), path


@pytest.mark.parametrize("load", [demo, lambda: parse_config(SHARED, env={})], ids=["demo", "shared-parts"])
def test_parts_that_were_one_object_still_are_and_no_others(monkeypatch: pytest.MonkeyPatch, load: Any) -> None:
    config, plain = parsed_both_ways(monkeypatch, load)

    def identities(root: Config) -> list[int]:
        """Each model's, list's and dict's position as the index of the first path where the same object
        was met: equal lists iff the same parts are one object."""
        first: dict[int, int] = {}
        return [first.setdefault(id(node), n) for n, (_, node) in enumerate(models(root))]

    assert identities(config) == identities(plain)
    # And sharing did share here (the check above would pass on two configs that share nothing).
    if load is not demo:
        a, b = config.integrations["a"].checks, config.integrations["b"].checks
        assert a[0].retry is a[1].retry is b[0].retry  # type: ignore[attr-defined]
        assert a[2].retry is not a[0].retry  # type: ignore[attr-defined]


def test_what_probes_derive_from_a_check_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    config, plain = parsed_both_ways(monkeypatch, demo)
    pairs = zip(config.iter_checks(), plain.iter_checks(), strict=True)
    http = [(ours, other) for (_, ours), (_, other) in pairs if ours.kind == "http"]  # type: ignore[attr-defined]
    assert http
    for ours, other in http:
        assert ours.request_plan.url == other.request_plan.url, ours.name  # type: ignore[attr-defined]
        assert dict(ours.request_plan.headers) == dict(other.request_plan.headers), ours.name  # type: ignore[attr-defined]
        assert ours.retry.policy == other.retry.policy, ours.name  # type: ignore[attr-defined]
        assert ours.expect.compiled_json == other.expect.compiled_json, ours.name  # type: ignore[attr-defined]
    # A secret the file refers to is held as it was parsed: still masked when shown, the same when used.
    authorization = config.integrations["payments"].checks[0].headers["Authorization"]  # type: ignore[attr-defined]
    assert authorization.get_secret_value() == "Bearer " + ENV["DEMO_PAYMENTS_KEY"]
    assert ENV["DEMO_PAYMENTS_KEY"] not in repr(config) + str(authorization)


def test_a_config_pickle_cannot_copy_is_kept_as_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> bytes:
        raise TypeError("cannot pickle '_thread.lock' object")

    plain = parse_config(SHARED, env={})
    monkeypatch.setattr(monitor.settings.compact.pickle, "dumps", refuse)
    config = parse_config(SHARED, env={})
    assert config == plain
    assert config.model_dump(exclude_unset=True) == plain.model_dump(exclude_unset=True)
