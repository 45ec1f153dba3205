"""Config loading: every bad file under data/bad_configs is rejected with the exact path and message its
``# expect: PATH: MESSAGE`` lines announce (MESSAGE is a prefix of the reported message); all problems
of a file are reported, not just the first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.settings import ConfigError, load_config, parse_config

DATA = Path(__file__).parent / "data"
BAD = sorted((DATA / "bad_configs").glob("*.yaml"))
ENV = {"STRIPE_KEY": "sk_test_config", "SLACK_BOT_TOKEN": "xoxb-config-test"}
_EXPECT = re.compile(r"^# expect: (\S+): (.*)$", re.MULTILINE)
FILE_LEVEL = "<file>"  # a problem of the whole file (its encoding, its YAML): reported without a path


def expectations(path: Path) -> list[tuple[str, str]]:
    """The ``# expect:`` lines, read whatever the file's encoding (some bad configs are bad at that)."""
    data = path.read_bytes()
    text = data.decode("utf-16") if data.startswith((b"\xff\xfe", b"\xfe\xff")) else data.decode("utf-8", "replace")
    return [("" if m.group(1) == FILE_LEVEL else m.group(1), m.group(2).rstrip()) for m in _EXPECT.finditer(text)]


def test_every_bad_config_announces_what_it_expects() -> None:
    assert len(BAD) >= 10
    for path in BAD:
        assert expectations(path), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_config_reports_each_problem_with_its_path(path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV)
    problems = info.value.problems
    for want_path, want_message in expectations(path):
        messages = [msg for p, msg in problems if p == want_path]
        assert messages, f"no problem at {want_path}; got {problems}"
        assert any(msg.startswith(want_message) for msg in messages), (want_path, want_message, messages)
    # Nothing beyond what the file announces: a stray problem would mean a misleading report.
    assert len(problems) == len(expectations(path)), problems
    for value in ENV.values():  # nor a value that came from the environment (it may be a secret)
        assert not any(value in msg for _, msg in problems), (value, problems)


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_check_config_exits_2_on_every_bad_config_without_a_traceback(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: {len(expectations(path))} problem(s)") and "Traceback" not in err
    assert not any(value in err for value in ENV.values())


def test_good_config_loads() -> None:
    config = load_config(DATA / "good_config.yaml", env=ENV)
    stripe = config.integrations["stripe"]
    check = stripe.checks[0]
    assert (check.name, check.interval, check.timeout, check.retry.attempts) == ("balance", 30.0, 10.0, 3)
    assert stripe.notes == DATA / "notes" / "stripe.md"  # relative to the config file
    assert config.monitor.redis_url is None  # ${REDIS_URL:-} → empty → off
    assert "Bearer sk_test_config" in config.secret_values()
    assert "xoxb-config-test" in config.secret_values()


def test_default_expansion_and_literal_dollar() -> None:
    config = parse_config(
        """
        monitor: {listen: "${IM_TEST_LISTEN:-127.0.0.1:9999}"}
        integrations:
          a:
            checks: [{name: c, kind: http, url: "http://127.0.0.1/x?price=$$5"}]
        """,
        env={},
    )
    assert config.monitor.listen == "127.0.0.1:9999"
    assert config.integrations["a"].checks[0].url.endswith("price=$5")  # type: ignore[attr-defined]


def test_default_stands_in_for_an_empty_variable_and_may_nest() -> None:
    """``${VAR:-default}`` as the shell and docker compose read it: the default also stands in for a
    variable set to "" (what an optional Kubernetes secret gives), and a default may be ``${OTHER:-…}``."""
    config = parse_config(
        """
        monitor: {listen: "${IM_TEST_LISTEN:-127.0.0.1:9999}", redis_url: "${IM_TEST_REDIS}",
                  evaluation_interval: "${IM_TEST_EVAL}"}
        integrations:
          a:
            checks:
              - {name: c, kind: http, url: "${IM_TEST_A:-${IM_TEST_B:-http://127.0.0.1/b}}?q={x}"}
              - {name: d, kind: http, url: "${IM_TEST_A:-${IM_TEST_C:-http://127.0.0.1/b}}"}
        """,
        env={"IM_TEST_LISTEN": "", "IM_TEST_REDIS": "", "IM_TEST_A": "", "IM_TEST_C": "http://127.0.0.1/c",
             "IM_TEST_EVAL": "15"},  # a number of seconds from the environment is text
    )
    assert config.monitor.listen == "127.0.0.1:9999"
    assert config.monitor.redis_url is None  # ${VAR} set to "" stays "" (here: no Redis), as in the shell
    assert config.monitor.evaluation_interval == 15.0
    checks = config.integrations["a"].checks
    assert [c.url for c in checks] == ["http://127.0.0.1/b?q={x}", "http://127.0.0.1/c"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("written", "value", "problem"), [
    (  # a nested default that ends unset names the variable that is missing
        'integrations:\n  a:\n    checks: [{name: c, kind: http, url: "${IM_TEST_A:-${IM_TEST_B}}"}]\n', None,
        "integrations.a.checks[0].url: environment variable IM_TEST_B is not set (use ${IM_TEST_B:-default})",
    ),
    (  # a bad value that came from a default is shown as written, once
        'monitor: {listen: "${IM_TEST_A:-nothere}"}\n', None,
        "monitor.listen: expected HOST:PORT such as 0.0.0.0:9478, got '${IM_TEST_A:-nothere}'",
    ),
    (  # a short value is not replaced inside the message's own words ("5m" of the example)
        'monitor: {evaluation_interval: "${IM_TEST_A}"}\n', "m",
        "monitor.evaluation_interval: expected a duration like 500ms, 30s, 5m or 4h, got '${IM_TEST_A}'",
    ),
])
def test_a_problem_with_a_variable_shows_the_template(
    written: str, value: str | None, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(written)
    monkeypatch.delenv("IM_TEST_B", raising=False)
    if value is None:
        monkeypatch.delenv("IM_TEST_A", raising=False)
    else:
        monkeypatch.setenv("IM_TEST_A", value)
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines()[1:] == [f"  {problem}"]


def test_missing_notes_file_is_a_problem_alongside_others(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("integrations:\n  a:\n    notes: missing.md\n    checks: [{name: c, kind: http, url: nope}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    paths = [p for p, _ in info.value.problems]
    assert paths == ["integrations.a.checks[0].url", "integrations.a.notes"]


def test_unreadable_file_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("monitor: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_check_config_lists_every_problem_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "bad_configs" / "many_problems.yaml"
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    for want_path, want_message in expectations(path):
        assert f"  {want_path}: {want_message}" in err, (want_path, err)
    assert f"{len(expectations(path))} problem(s)" in err


def test_check_config_summarises_each_integration(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config", str(DATA / "good_config.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "stripe: 1 check(s) (balance every 30s); 2 quota(s) (api from redis, api-headers from headers); "
        "webhooks: watched, max silence 30m"
    )
    assert out[1].endswith("OK (1 integration(s), 1 check(s))")
