"""The tests' one wait (tests/waiting.py): what its failure says, and what ends it early."""

from __future__ import annotations

import pytest
from waiting import until, until_blocking


async def test_a_wait_that_fails_names_what_it_awaited_and_the_last_value_it_saw() -> None:
    seen = iter(range(100))
    with pytest.raises(AssertionError, match=r"not within 0\.2 s: 5 runs; last seen: \d+$"):
        await until(lambda: next(seen), "5 runs", holds=lambda n: n >= 100, within=0.2)


async def test_an_awaited_look_counts_and_its_value_is_returned() -> None:
    async def look() -> list[str]:
        return ["sent"]

    assert await until(look, "a result") == ["sent"]


async def test_an_ignored_error_is_not_yet_and_is_named_in_the_failure() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("nobody listens")

    with pytest.raises(AssertionError, match=r"last seen: nothing \(no look completed\) "
                                             r"\(the last look raised ConnectionRefusedError\('nobody listens'\)\)"):
        await until(refused, "an answer", within=0.1, ignoring=(OSError,))


async def test_any_other_error_ends_the_wait_at_once() -> None:
    looks = []

    def exited() -> bool:
        looks.append(1)
        raise AssertionError("the process exited with 1")

    with pytest.raises(AssertionError, match="the process exited with 1"):
        await until(exited, "an answer", ignoring=(OSError,))
    assert len(looks) == 1


def test_the_blocking_wait_says_the_same() -> None:
    assert until_blocking(lambda: 7, "a value") == 7
    with pytest.raises(AssertionError, match=r"not within 0\.1 s: a page; last seen: ''$"):
        until_blocking(lambda: "", "a page", within=0.1, every=0.01)
