"""The two ways to read a quota's keys give the same readings: the server-side scripts gather exactly the
values the plain commands would, and one decoder per format turns them into readings. Random key states of
every format (garbage values, keys of another type, missing partner keys, lists whose writers' clocks
disagree) on the shared Redis, read both ways at the same instant; and the ``limits`` moving window, read
both ways, against the library's own answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import limits
import limits.storage
import limits.strategies
import pytest
import redis
import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_servers import SHARED_REDIS

from integration_kit.limiter_formats import KeyReading
from monitor.quota.reader import QuotaReader
from monitor.settings.quota import RedisQuotaConfig

# Not numbers to Python, or to Lua, or to neither ("\udcff" is the byte 0xff, not UTF-8).
GARBAGE = st.sampled_from(["", "x", "nan", "inf", "-inf", "0x1A", "1_0", " 7 ", "12abc", "\udcff"])
OFFSETS = st.floats(-200, 20, allow_nan=False)  # seconds from now: inside and outside a minute's window


def number_or_garbage(numbers: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    return st.one_of(numbers.map(str), GARBAGE)


# A key's state: ("string", value) | ("list", [values…]) | ("zset", {member: score}) | ("hash", {field: value})
# | None (missing).
def other_type() -> st.SearchStrategy[Any]:
    return st.sampled_from([("list", ["1"]), ("hash", {"f": "1"}), ("zset", {"m": 1.0})])


def counter_keys() -> st.SearchStrategy[dict[str, Any]]:
    state = st.one_of(st.none(), other_type(), strings(st.integers(0, 200)))
    return st.dictionaries(st.from_regex(r"\Ark:[a-z]{1,3}\Z"), state, max_size=6)


def strings(numbers: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[str, str]]:
    return number_or_garbage(numbers).map(lambda v: ("string", v))


def limits_keys(now: float) -> st.SearchStrategy[dict[str, Any]]:
    stamps = st.lists(number_or_garbage(OFFSETS.map(lambda o: now + o)), min_size=1, max_size=12)
    plain = st.one_of(
        strings(st.integers(0, 20)),
        stamps.map(lambda v: ("list", v)),
        stamps.map(lambda v: ("list", sorted(v, key=_time, reverse=True))),  # as limits writes it
        other_type(),
        st.none(),
    )
    # Without a TTL: a PTTL counts down between the two reads, and the readings with it. How a TTL weighs
    # is the decoder's (one for both ways), and the library tests read real windows both ways.
    current = st.one_of(st.none(), other_type(), strings(st.integers(0, 20)))
    names = st.tuples(st.from_regex(r"\A[a-z]{1,3}\Z"), st.sampled_from(["10/1/minute", "5/2/second", "3/1/hour"]))
    return st.dictionaries(names, st.tuples(plain, current, current), max_size=5).map(_limits_layout)


def _time(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def _limits_layout(drawn: dict[tuple[str, str], tuple[Any, Any, Any]]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for (name, tail), (plain, current, previous) in drawn.items():
        keys[f"LIMITS:LIMITER/{name}/{tail}"] = plain
        keys[f"LIMITS:{{LIMITER/{name}/{tail}}}"] = current
        keys[f"LIMITS:{{LIMITER/{name}/{tail}}}/-1"] = previous
    return keys


def sliding_log_keys(now: float) -> st.SearchStrategy[dict[str, Any]]:
    scores = st.dictionaries(st.from_regex(r"\A[a-z]{1,4}\Z"), OFFSETS.map(lambda o: (now + o) * 1000), max_size=8)
    state = st.one_of(st.none(), st.sampled_from([("string", "1"), ("list", ["1"])]), scores.map(lambda z: ("zset", z)))
    return st.dictionaries(st.from_regex(r"\Alog:[a-z]{1,3}\Z"), state, max_size=5)


def token_bucket_keys(now: float) -> st.SearchStrategy[dict[str, Any]]:
    tokens = st.one_of(st.none(), other_type(), strings(st.integers(0, 20)))
    stamp = st.one_of(st.none(), other_type(), strings(OFFSETS.map(lambda o: int(now + o))))
    pairs = st.dictionaries(st.from_regex(r"\A[a-z]{1,3}\Z"), st.tuples(tokens, stamp), max_size=5)
    return pairs.map(lambda d: {k: v for n, (t, s) in d.items()
                                for k, v in ((f"tb.{{{n}}}.tokens", t), (f"tb.{{{n}}}.timestamp", s))})


def token_bucket_suffixed_keys(now: float) -> st.SearchStrategy[dict[str, Any]]:
    """Suffixes of our own, one of them not ASCII: the script names the timestamp key by cutting the tokens
    suffix's bytes (not characters) off the tokens key."""
    suffixes = {".tokens": ":jetons-\u00e9", ".timestamp": ":t"}
    return token_bucket_keys(now).map(
        lambda keys: {k.rsplit(".", 1)[0] + suffixes["." + k.rsplit(".", 1)[1]]: v for k, v in keys.items()})


def token_hash_keys(now: float) -> st.SearchStrategy[dict[str, Any]]:
    field = st.one_of(st.none(), number_or_garbage(OFFSETS.map(lambda o: int(now + o))))
    named = ("tokens", "timestamp")
    hashed = st.tuples(field, field).map(lambda t: ("hash", {k: v for k, v in zip(named, t, strict=True) if v}))
    state = st.one_of(st.none(), st.sampled_from([("string", "1"), ("list", ["1"])]), hashed)
    return st.dictionaries(st.from_regex(r"\Ahb:[a-z]{1,3}\Z"), state, max_size=5)


FORMATS = {
    "counter": (dict(format="counter", match="rk:*", limit=10), lambda now: counter_keys()),
    "gcra": (dict(format="gcra", match="rk:*", variant="redis_rate", rate=1, burst=5), lambda now: counter_keys()),
    "limits": (dict(format="limits", match="LIMITS:*"), limits_keys),
    "sliding_log": (dict(format="sliding_log", match="log:*", limit=5, window=60), sliding_log_keys),
    "token_bucket": (dict(format="token_bucket", match="tb.*", capacity=10, rate=1), token_bucket_keys),
    "token_bucket suffixes": (dict(format="token_bucket", match="tb.*", capacity=10, rate=1,
                                   tokens_suffix=":jetons-\u00e9", timestamp_suffix=":t"), token_bucket_suffixed_keys),
    "token_bucket hash": (dict(format="token_bucket", match="hb:*", capacity=10, rate=1, layout="hash"),
                          token_hash_keys),
}


def write(sync: redis.Redis, tag: str, keys: dict[str, Any]) -> None:
    pipe = sync.pipeline(transaction=False)
    for name, state in keys.items():
        key = (tag + name).encode("utf-8", "surrogateescape")
        if state is None:
            continue
        kind, value = state
        if kind == "string":
            pipe.set(key, value.encode("utf-8", "surrogateescape"))
        elif kind == "list":
            pipe.rpush(key, *(v.encode("utf-8", "surrogateescape") for v in value))
        elif kind == "zset" and value:
            pipe.zadd(key, value)
        elif kind == "zset":
            pipe.zadd(key, {"only": 1.0})
        elif kind == "hash" and value:
            pipe.hset(key, mapping={k: v.encode("utf-8", "surrogateescape") for k, v in value.items()})
        elif kind == "hash":
            pipe.hset(key, "other", "1")
    pipe.execute()


async def both_ways(cfg: RedisQuotaConfig, names: list[str], now: float) -> tuple[Any, Any]:
    conn = redis.asyncio.Redis.from_url(SHARED_REDIS)
    try:
        answers = []
        for scripts in (True, False):
            reader = QuotaReader(cfg, scripts=scripts)
            keys = list(dict.fromkeys(k for k in map(reader.format.primary, names) if k is not None))
            readings, skipped, _, _ = await reader.read_keys(conn, keys, now)
            assert reader.scripts == scripts
            answers.append(({r.key: r for r in readings}, dict(skipped)))
        return answers[0], answers[1]
    finally:
        await conn.aclose()


@pytest.fixture(scope="module")
def sync() -> redis.Redis:
    conn = redis.Redis.from_url(SHARED_REDIS)
    try:
        conn.ping()
    except (redis.RedisError, OSError) as exc:
        from needs import missing

        missing(f"Redis at 127.0.0.1:6379 not reachable: {exc}")
    return conn


@pytest.mark.parametrize("name", list(FORMATS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_scripts_and_plain_commands_read_the_same(sync, name, data):
    fields, keys_of = FORMATS[name]
    seconds, micros = sync.time()
    now = seconds + micros / 1e6
    keys = data.draw(keys_of(now))
    tag = f"qg{uuid.uuid4().hex[:10]}:"
    cfg = RedisQuotaConfig(name="q", source="redis", **{**fields, "match": tag + str(fields["match"])})
    try:
        write(sync, tag, keys)
        names = [tag + k for k in keys]
        gathered, plain = asyncio.run(both_ways(cfg, names, now))
        assert gathered == plain
    finally:
        stale = [k for k in sync.scan_iter(match=f"{tag}*", count=1000)]
        if stale:
            sync.delete(*stale)


# ---- the limits library's own answer ----------------------------------------------------------------


@pytest.mark.parametrize("scripts", [True, False], ids=["scripts", "plain commands"])
@settings(max_examples=40, deadline=None)
@given(ages=st.lists(st.floats(0, 120, allow_nan=False), max_size=10), amount=st.integers(10, 12))
def test_moving_window_agrees_with_limits(sync, scripts, ages, amount):
    """Entries as limits keeps them (newest first, at most the limit), some inside the minute, some not."""
    tag = f"qm{uuid.uuid4().hex[:10]}"
    storage = limits.storage.RedisStorage(SHARED_REDIS)
    limiter = limits.strategies.MovingWindowRateLimiter(storage)
    item = limits.RateLimitItemPerMinute(amount)
    key = "LIMITS:" + item.key_for(tag)
    try:
        now = time.time()
        if ages:
            sync.rpush(key, *(repr(now - age) for age in sorted(ages)))
        cfg = RedisQuotaConfig(name="q", source="redis", format="limits", match=f"LIMITS:LIMITER/{tag}/*")
        reading = asyncio.run(read_once(cfg, scripts))
        stats = limiter.get_window_stats(item, tag)
        if not ages:
            assert reading.keys == 0
            return
        assert reading.observation.used == amount - stats.remaining
        assert reading.observation.reset_seconds is not None
        assert abs(reading.observation.observed_at + reading.observation.reset_seconds - stats.reset_time) < 0.5
    finally:
        sync.delete(key)
        storage.storage.close()


async def read_once(cfg: RedisQuotaConfig, scripts: bool) -> Any:
    conn = redis.asyncio.Redis.from_url(SHARED_REDIS)
    try:
        reader = QuotaReader(cfg, scripts=scripts)
        reading = await reader.read(conn)
        assert reader.scripts == scripts
        return reading
    finally:
        await conn.aclose()


def test_readings_compare_by_value():
    # The property above compares readings with ==: it must see every field that reaches the gauges.
    one = KeyReading(key="k", used=1.0, limit=2.0, reset_seconds=3.0, window_seconds=4.0)
    assert one != KeyReading(key="k", used=1.0, limit=2.0, reset_seconds=3.5, window_seconds=4.0)
    assert one == KeyReading(key="k", used=1.0, limit=2.0, reset_seconds=3.0, window_seconds=4.0)
