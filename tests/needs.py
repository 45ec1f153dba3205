"""What a test needs from the machine, said once: a missing binary or service fails the test under CI
(CI installs and starts everything) and skips it elsewhere with the reason; free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket

import pytest


def missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def need_binary(binary: str, package: str, *, also_in: str | None = None) -> str:
    """Path of ``binary`` (searched on PATH, then in ``also_in``); ``package`` names where it comes from."""
    path = shutil.which(binary) or (shutil.which(binary, path=also_in) if also_in else None)
    if path is None:
        missing(f"{binary} not installed ({package})")
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
