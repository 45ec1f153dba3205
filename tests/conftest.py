"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from targets import Target


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    """A misbehaving vendor API on 127.0.0.1 (see tests/targets.py); script it with target.route()."""
    async with Target() as server:
        yield server
