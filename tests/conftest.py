"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest
from targets import Target


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    """A misbehaving vendor API on 127.0.0.1 (see tests/targets.py); script it with target.route()."""
    async with Target() as server:
        yield server


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed test shows what the processes it started logged: a fixture that starts some sets
    ``request.node.process_logs`` to a function returning their last lines (tests/fleet.py does)."""
    outcome = yield
    report = outcome.get_result()
    logs = getattr(item, "process_logs", None)
    if report.failed and logs is not None:
        report.sections.append(("process logs", logs()))
