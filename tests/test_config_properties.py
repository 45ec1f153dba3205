"""The config loader under hypothesis: any bytes, any YAML tree, any value anywhere in a valid config →
a Config or a ConfigError whose every problem has a message (and a path, unless it is about the whole
file), never another exception; and the shapes that used to hang or recurse forever are refused fast."""

from __future__ import annotations

import asyncio
import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor.settings import ConfigError, load_config, parse_config
from monitor.settings.source import MAX_DEPTH

DATA = Path(__file__).parent / "data"
ENV = {"STRIPE_KEY": "sk_test_properties", "SLACK_BOT_TOKEN": "xoxb-properties-test"}
GOOD = yaml.safe_load((DATA / "good_config.yaml").read_text())

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["30s", "0", "-1s", "1m30s", "2xx", "200-204", "${STRIPE_KEY}", "${NOPE}", "$$", "http://x/",
                     "https://127.0.0.1:1/", "$.a[0]", "[", "(", "GET", "headers", "redis", "http", "4000000d"]),
)
keys = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans(),
                 st.sampled_from(["monitor", "integrations", "alerting", "checks", "kind", "name", "url"]))
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=30,
)


def assert_loads_or_names_its_problems(load: Any) -> None:
    try:
        load()
    except ConfigError as exc:
        assert exc.problems, "a ConfigError without a problem"
        for path, message in exc.problems:
            assert isinstance(path, str) and isinstance(message, str) and message.strip(), exc.problems
        assert not any(value in str(exc) for value in ENV.values()), str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
@example(data=b"\xff\xfe" + "monitor: {}".encode("utf-16-le"))
@example(data=b"monitor:\n  listen: caf\xe9\n")
@example(data=b"a: 2024-13-45\n")
@example(data=b"\x00")
def test_any_bytes_load_or_exit_with_named_problems(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    assert_loads_or_names_its_problems(lambda: load_config(path, env=ENV))


@settings(max_examples=400, deadline=None)
@given(tree=trees)
def test_any_yaml_tree_loads_or_exits_with_named_problems(tree: Any) -> None:
    text = yaml.safe_dump(tree)
    assert_loads_or_names_its_problems(lambda: parse_config(text, env=ENV))


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*path, i))
    return out


@settings(max_examples=400, deadline=None)
@given(where=st.sampled_from(_paths(GOOD)[1:]), value=trees)
@example(where=("integrations", "stripe", "checks", 0, "interval"), value=float("inf"))
@example(where=("integrations", "stripe", "checks", 0, "name"), value=[1])
@example(where=("integrations", "stripe", "notes"), value="a\x00b")
def test_any_value_anywhere_in_a_valid_config_loads_or_names_its_problems(where: tuple[Any, ...], value: Any) -> None:
    """Mutations of the good config reach every validator (statuses, JSON paths, regexes, references…)."""
    config = copy.deepcopy(GOOD)
    node = config
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    text = yaml.safe_dump(config)
    assert_loads_or_names_its_problems(lambda: parse_config(text, env=ENV, base_dir=DATA))


async def _check_config(path: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "check-config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 20_000 + "]" * 20_000,
        "a: " + "{b: " * 20_000 + "1" + "}" * 20_000,
        "".join("  " * i + f"k{i}:\n" for i in range(2_000)),
    ],
    ids=["flow-sequences", "flow-mappings", "block-mappings"],
)
async def test_20000_levels_of_nesting_exit_2_not_a_recursion_error(text: str, tmp_path: Path) -> None:
    """The real command, bounded by a timeout so a hang fails the test rather than the suite."""
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    code, err = await _check_config(path)
    assert code == 2 and "Traceback" not in err, err
    assert "nest" in err and f"{path}: 1 problem(s)" in err, err


async def test_alias_bomb_exits_2_instead_of_hanging() -> None:
    code, err = await _check_config(DATA / "bad_configs" / "alias_bomb.yaml")
    assert code == 2 and "alias bomb" in err, err


def test_aliases_within_reason_still_work() -> None:
    """Anchors for shared headers are ordinary YAML: only an explosion is refused."""
    text = (
        "integrations:\n  a:\n    checks:\n"
        "      - {name: c0, kind: http, url: 'https://x.test/0', headers: &h {Authorization: 'Bearer ${STRIPE_KEY}'}}\n"
        + "\n".join(f"      - {{name: c{i}, kind: http, url: 'https://x.test/', headers: *h}}" for i in range(1, 200))
        + "\n"
    )
    loaded = parse_config(text, env=ENV)
    assert len(loaded.integrations["a"].checks) == 200
    assert MAX_DEPTH >= 32  # real configs nest about 8 deep; JSON bodies a little more
