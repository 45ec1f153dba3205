"""Helpers for tests that run several Python processes at once (many writers of one Redis) and wait on
conditions instead of sleeping."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def run_scripts(script: str, argvs: Sequence[Sequence[str]], *, within: float = 120.0) -> list[str]:
    """Run ``python -c script *argv`` once per argv, all at the same time (from the repository root);
    their stdouts, in order. Fails with their stderr if any exits non-zero."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for argv in argvs
    ]
    async with asyncio.timeout(within):
        outputs = [await p.communicate() for p in procs]
    failed = [err.decode()[-2000:] for p, (_, err) in zip(procs, outputs, strict=True) if p.returncode != 0]
    assert not failed, failed
    return [out.decode() for out, _ in outputs]


