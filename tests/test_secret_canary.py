"""Secret canaries through the real daemon: a canary in every place a secret can be configured, a vendor
that echoes back what it received (body, headers, rate-limit policy names, redirect targets, the API key
base64- and hex-encoded in an error body), a Slack that fails, and a search of everything the product
writes — logs (text and JSON, at DEBUG), /metrics, /api/*, what Slack was sent, CLI output (`probe`,
`check-config`, `silence list`), a cross-origin redirect's target — for every canary in every encoding
(tests/leaks.py). Zero leaks.

To add a place (a new notifier's credentials, say): give it a canary in ``CANARIES`` (and what the run
derives from it in ``DERIVED``), put it in ``canary_config`` where that secret is configured, make sure
the daemon uses it during the run (a notification goes through every notifier; the vendor target can
play any HTTP service and echo what it gets), and nothing else: the search covers it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
from daemon_support import UP_WITHIN, get, samples
from fake_slack import FakeSlack
from fake_slack import Reply as SlackReply
from leaks import leaks
from needs import free_port, missing, need_binary
from oauth2_server import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, OAuth2Server
from targets import Reply, Target
from waiting import until

EXE = Path(sys.executable).parent / "integration-monitor"

# Every place a secret can be configured, each with its own canary. Reserved characters (/ + = & space :
# @) make every encoding write them differently; each is unique, so a leak names its place.
CANARIES = {
    "header": "CNRY-hdr/+=1a",                 # integrations.*.checks[].headers (X-Api-Key)
    "bearer": "CNRY-brr/+=2b",                 # headers: Authorization: Bearer …
    "query": "CNRY q/+=&3c",                   # checks[].query, a parameter named like nothing secret
    "url_query": "CNRY-uq/+=4d",               # ?api_key=… written inline in checks[].url
    "url_password": "CNRY-pw/+=:@5e",          # user:password@ in checks[].url (aiohttp sends it as Basic)
    "basic_password": "CNRY-basic/+=6f",       # auth: {kind: basic}
    "hmac_key": "CNRY-hmac/+=7a",              # auth: {kind: hmac} key (never sent; signs)
    "hmac_key_id": "CNRY-keyid/+=8b",          # auth: {kind: hmac} headers (a key id, sent as is)
    "oauth2_client_secret": CLIENT_SECRET,     # auth: {kind: oauth2_client_credentials} (the fake's own)
    "oauth2_refresh_token": REFRESH_TOKEN,     # auth: {kind: oauth2_refresh_token} (the fake's own; it rotates)
    "slack_token": "xoxb-CNRY-slack-9c0d",     # alerting.slack.token
    "redis_password": "CNRY-redis/+=0e",       # monitor.redis_url (a private redis-server with requirepass)
    "api_token": "CNRY-api/+=1f",              # monitor.api_token
    "alertmanager_password": "CNRY-am/+=2a",   # alerting.alertmanager.basic_auth (bearer_token: the same path)
}
# Secrets the run produces from the configured ones: the Basic headers (base64 of user:password).
USER = "probe-user"
# A session token the vendor hands a flow's first step, which the next step sends as a header: a
# credential learnt at run time (and so are the OAuth2 access tokens and rotated refresh tokens).
HANDED_SESSION = "CNRY-session/+=3c"


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


DERIVED = {
    "url_basic": _basic(USER, CANARIES["url_password"]),
    "basic_header": _basic(USER, CANARIES["basic_password"]),
    "alertmanager_basic": _basic(USER, CANARIES["alertmanager_password"]),
}


@dataclass
class Stack:
    vendor: Target
    elsewhere: Target  # where a redirect sends the probe: another origin
    oauth2: OAuth2Server
    slack: FakeSlack
    redis_port: int
    env: dict[str, str]

    def secrets(self) -> list[str]:
        return [*CANARIES.values(), *DERIVED.values(), *self.oauth2.issued, *self.oauth2.refresh_tokens,
                HANDED_SESSION]


def canary_config(stack: Stack, *, listen: str) -> str:
    vendor, c = stack.vendor, CANARIES
    echo = vendor.url("/echo")
    url_with_credentials = (
        f"http://{USER}:{quote(c['url_password'], safe='')}@127.0.0.1:{vendor.port}/echo?api_key="
        f"{quote(c['url_query'], safe='')}"
    )
    return f"""
monitor:
  listen: "{listen}"
  redis_url: "${{CANARY_REDIS_URL}}"
  api_token: "${{CANARY_API_TOKEN}}"
  evaluation_interval: 500ms
  jitter: 0
  shutdown_grace: 2s
integrations:
  vendor:
    alerts:
      probe_down: {{consecutive_failures: 1}}
    quotas:
      - {{name: echoed, source: headers, check: credentials}}
    checks:
      - name: credentials
        kind: http
        url: "{url_with_credentials}"
        headers:
          X-Api-Key: "${{CANARY_HEADER}}"
          Accept: application/json
        query: {{cursor: "{c['query']}"}}
        interval: 300ms
        timeout: 2s
      - name: bearer
        kind: http
        url: "{echo}"
        headers: {{Authorization: "Bearer {c['bearer']}"}}
        interval: 300ms
      - name: basic
        kind: http
        url: "{echo}"
        auth: {{kind: basic, username: {USER}, password: "{c['basic_password']}"}}
        interval: 300ms
      - name: signed
        kind: http
        url: "{echo}"
        auth:
          kind: hmac
          key: "{c['hmac_key']}"
          header: X-Signature
          message: "{{method}} {{path}} {{timestamp}}"
          timestamp_header: X-Timestamp
          headers: {{X-Key-Id: "{c['hmac_key_id']}"}}
        interval: 300ms
      - name: oauth2
        kind: http
        url: "{echo}"
        auth:
          kind: oauth2_client_credentials
          token_url: "{stack.oauth2.token_url}"
          client_id: {CLIENT_ID}
          client_secret: "${{CANARY_OAUTH2_SECRET}}"
        interval: 300ms
      - name: refreshed
        kind: http
        url: "{echo}"
        auth:
          kind: oauth2_refresh_token
          token_url: "{stack.oauth2.token_url}"
          refresh_token: "${{CANARY_REFRESH_TOKEN}}"
          client_id: {CLIENT_ID}
        interval: 300ms
      - name: graphql
        kind: graphql
        url: "{echo}"
        headers: {{X-Shopify-Access-Token: "${{CANARY_HEADER}}"}}
        query: "{{ shop {{ name }} }}"
        interval: 300ms
      - name: flow
        kind: flow
        interval: 300ms
        steps:
          - {{name: login, method: POST, url: "{vendor.url('/login')}", json: {{user: {USER}}}}}
          - {{name: use, url: "{echo}", headers: {{X-Session: "${{steps.login.json.session}}"}}}}
      - name: encoded
        kind: http
        url: "{vendor.url('/encoded')}"
        headers: {{X-Api-Key: "${{CANARY_HEADER}}"}}
        interval: 300ms
      - name: redirected
        kind: http
        url: "{vendor.url('/hop')}"
        headers: {{X-Api-Key: "${{CANARY_HEADER}}"}}
        follow_redirects: false
        interval: 300ms
      - name: away
        kind: http
        url: "{vendor.url('/away')}"
        headers: {{X-Api-Key: "${{CANARY_HEADER}}", Authorization: "Bearer {c['bearer']}"}}
        interval: 300ms
alerting:
  slack: {{token: "${{CANARY_SLACK_TOKEN}}", channel: "#alerts", base_url: "{stack.slack.api_url}"}}
  console: {{stream: stdout}}
  alertmanager:                 # an Alertmanager that fails and echoes what it was sent
    urls: ["{vendor.url('/am')}"]
    basic_auth: {{username: {USER}, password: "${{CANARY_ALERTMANAGER_PASSWORD}}"}}
    timeout: 2s
  group_wait: 0s
  group_interval: 1s
"""


def route_vendor(stack: Stack) -> None:
    c = CANARIES
    # The vendor repeats the request in a 500's body and headers, names a rate-limit policy after the API
    # key it was sent (beside a second one: a lone policy would be labelled with the quota's plain name),
    # and redirects to a URL that carries the secrets in its query.
    policy = f'"{c["header"]}";q=100;w=60, "daily";q=1000;w=86400'
    stack.vendor.route("/login", Reply(json={"session": HANDED_SESSION}))
    stack.vendor.route("/echo", Reply(status=500, echo=True, headers={
        "RateLimit-Policy": policy, "RateLimit": f'"{c["header"]}";r=5;t=30, "daily";r=900;t=3600',
    }))
    # A chatty vendor echoes the key it was sent encoded, at each of the three byte alignments of base64:
    # plain, behind a 4-byte prefix, inside a JWT-like URL-safe blob behind 20 bytes; the form body it
    # was sent (the key URL-escaped), base64-encoded; and in hex, lower and mixed case.
    key = c["header"].encode()
    jwt = ".".join(base64.urlsafe_b64encode(part).decode().rstrip("=")
                   for part in (b'{"alg":"none"}', b'{"sub":"probe","k":"' + key + b'"}'))
    mixed_hex = "".join(d.upper() if i % 2 else d for i, d in enumerate(key.hex()))
    stack.vendor.route("/encoded", Reply(status=401, json={
        "error": "invalid key", "key": base64.b64encode(key).decode(),
        "seen": base64.b64encode(b"key:" + key).decode(), "token": jwt, "hex": key.hex(), "Hex": mixed_hex,
        "body": base64.b64encode(f"user=probe&key={quote_plus(c['header'])}".encode()).decode(),
    }))
    location = f"/echo?token={quote(c['bearer'], safe='')}&cursor={quote(c['query'], safe='')}"
    stack.vendor.route("/hop", Reply(status=302, headers={"Location": location}))
    stack.vendor.route("/away", Reply(status=302, headers={"Location": stack.elsewhere.url("/echo")}))
    stack.elsewhere.route("/echo", Reply(status=500, echo=True))
    stack.vendor.route("/am/api/v2/alerts", Reply(status=500, echo=True))


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    redis_bin = need_binary("redis-server", "Debian package `redis-server`")
    if not EXE.exists():
        missing(f"console script {EXE} not installed (pip install -e .)")
    redis_port = free_port()
    redis = await asyncio.create_subprocess_exec(
        redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--requirepass", CANARIES["redis_password"], stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    slack = await FakeSlack(token=CANARIES["slack_token"]).start()
    # Slack fails: the first messages get 500s and a rate limit, then it accepts.
    slack.then(SlackReply(status=500, only="chat.postMessage"), SlackReply(status=503, only="chat.postMessage"),
               SlackReply(status=429, retry_after="0.2", only="chat.postMessage"))
    try:
        async with Target() as vendor, Target() as elsewhere, OAuth2Server(rotate=True) as oauth2:
            env = {
                "CANARY_HEADER": CANARIES["header"],
                "CANARY_OAUTH2_SECRET": CANARIES["oauth2_client_secret"],
                "CANARY_REFRESH_TOKEN": CANARIES["oauth2_refresh_token"],
                "CANARY_SLACK_TOKEN": CANARIES["slack_token"],
                "CANARY_API_TOKEN": CANARIES["api_token"],
                "CANARY_ALERTMANAGER_PASSWORD": CANARIES["alertmanager_password"],
                "CANARY_REDIS_URL": f"redis://:{quote(CANARIES['redis_password'], safe='')}@127.0.0.1:{redis_port}/0",
            }
            s = Stack(vendor=vendor, elsewhere=elsewhere, oauth2=oauth2, slack=slack, redis_port=redis_port,
                      env=env)
            route_vendor(s)
            yield s
    finally:
        await slack.close()
        redis.terminate()
        await redis.wait()


async def run_cli(env: dict[str, str], *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(EXE), *args, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return f"exit {proc.returncode}\n{out.decode(errors='replace')}\n{err.decode(errors='replace')}"


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_no_secret_leaves_the_daemon_in_any_form(stack: Stack, tmp_path: Path, fmt: str) -> None:
    config = tmp_path / "monitor.yaml"
    port = free_port()
    config.write_text(canary_config(stack, listen=f"127.0.0.1:{port}"))
    base = f"http://127.0.0.1:{port}"
    outputs: dict[str, str] = {}

    # Files, not pipes: at DEBUG the daemon writes more than a pipe holds before the test reads it.
    with (tmp_path / "stdout").open("wb") as stdout, (tmp_path / "stderr").open("wb") as stderr:
        daemon = await asyncio.create_subprocess_exec(
            str(EXE), "run", "-c", str(config), "--log-level", "DEBUG", "--log-format", fmt,
            env={**os.environ, **stack.env}, stdout=stdout, stderr=stderr,
        )
    try:
        async def every_check_failed_and_slack_was_sent_to() -> bool:
            try:
                status, _, body = await get(f"{base}/api/status")
            except OSError:
                return False
            checks = json.loads(body)["integrations"]["vendor"]["checks"] if status == 200 else {}
            failed = checks and all(c.get("last_failure") for c in checks.values())
            return bool(failed) and len(stack.slack.delivered("chat.postMessage")) >= 1

        try:
            # The wait spans the daemon's start too (at DEBUG): UP_WITHIN, as every daemon start is given, and
            # the default beyond it for the runs and Slack's retry. 30 s in all ran out at load 12 on 2 cores
            # with 5 runs done and the post's retry still waiting.
            await until(every_check_failed_and_slack_was_sent_to, "every check failing and Slack sent to",
                        within=UP_WITHIN + 30)
        except AssertionError:
            status = (await get(f"{base}/api/status"))[2]
            slack = [(r.kind, r.answered, r.error) for r in stack.slack.requests]
            log = (tmp_path / "stderr").read_text(errors="replace")[-4000:]
            raise AssertionError(f"{status[:6000]}\nslack: {slack}\nlog: {log}") from None
        auth = {"Authorization": f"Bearer {CANARIES['api_token']}"}
        async with aiohttp.ClientSession() as http:
            for method, path, headers, body in (
                ("POST", "/api/silences", auth, {"integration": "vendor", "duration": "1m", "comment": "canary"}),
                ("POST", "/api/silences", {"Authorization": "Bearer wrong"}, {"duration": "1m"}),
                ("DELETE", "/api/silences/nope", auth, None),
            ):
                async with http.request(method, f"{base}{path}", headers=headers, json=body) as resp:
                    outputs[f"{method} {path} {resp.status}"] = f"{dict(resp.headers)}\n{await resp.text()}"
        for path in ("/metrics", "/api/status", "/api/silences", "/healthz", "/readyz"):
            outputs[path] = (await get(f"{base}{path}"))[2]
        for accept in ("application/openmetrics-text; version=1.0.0",):
            outputs[f"/metrics {accept}"] = (await get(f"{base}/metrics", headers={"Accept": accept}))[2]
        assert 'quota="echoed/redacted"' in outputs["/metrics"]  # the policy named after the key was seen
        # A reload that fails with a secret in its errors.
        good = config.read_text()
        config.write_text(good.replace("interval: 300ms", "interval: ${CANARY_HEADER}", 1))
        daemon.send_signal(signal.SIGHUP)

        async def reload_failed() -> bool:
            metrics = samples((await get(f"{base}/metrics"))[2])
            return metrics[("integration_monitor_config_last_reload_successful", ())] == 0

        await until(reload_failed, "the failed reload")
        failing = tmp_path / "failing.yaml"
        failing.write_text(config.read_text())
        config.write_text(good)
        daemon.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.wait(), 30)
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
    outputs["daemon stdout"] = (tmp_path / "stdout").read_text(errors="replace")
    outputs["daemon log"] = (tmp_path / "stderr").read_text(errors="replace")
    assert daemon.returncode == 0, outputs["daemon log"][-3000:]

    env = stack.env
    outputs["probe credentials"] = await run_cli(env, "probe", "-c", str(config), "vendor/credentials")
    outputs["probe oauth2"] = await run_cli(env, "probe", "-c", str(config), "vendor/oauth2")
    outputs["probe redirected"] = await run_cli(env, "probe", "-c", str(config), "vendor/redirected")
    outputs["probe refreshed"] = await run_cli(env, "probe", "-c", str(config), "vendor/refreshed")
    outputs["probe encoded"] = await run_cli(env, "probe", "-c", str(config), "vendor/encoded")
    outputs["probe flow"] = await run_cli(env, "probe", "-c", str(config), "vendor/flow")
    outputs["check-config (the reload that failed)"] = await run_cli(env, "check-config", str(failing))
    outputs["silence list"] = await run_cli(env, "silence", "list", "-c", str(config), "--all", "--json")
    broken = tmp_path / "broken.yaml"
    broken.write_text(canary_config(stack, listen="${CANARY_API_TOKEN}").replace(
        "kind: http\n        url: \"http://", "kind: http\n        url: \"ftp://", 1))
    outputs["check-config (broken)"] = await run_cli(env, "check-config", str(broken))
    outputs["Slack requests"] = json.dumps(
        [{"kind": r.kind, "body": r.body, "headers": {k: v for k, v in r.headers.items() if k != "Authorization"}}
         for r in stack.slack.requests]
    )
    outputs["the other origin a redirect named"] = json.dumps(
        [{"headers": dict(h.headers), "query": h.query} for h in stack.elsewhere.hits()]
    )

    # The run really did carry every secret where it belongs (or the search below proves nothing).
    echoed = json.dumps([dict(h.headers) for h in stack.vendor.hits("/echo")])
    for place in ("header", "bearer", "hmac_key_id"):
        assert CANARIES[place] in echoed, place
    assert DERIVED["url_basic"] in echoed and DERIVED["basic_header"] in echoed and stack.oauth2.issued
    assert HANDED_SESSION in echoed and stack.oauth2.refresh_tokens  # handed over; rotated
    assert "invalid_grant" not in outputs["probe refreshed"]  # the CLI used the rotated token from Redis
    posted = json.dumps([dict(h.headers) for h in stack.vendor.hits("/am/api/v2/alerts")])
    assert DERIVED["alertmanager_basic"] in posted
    assert "CNRY" in outputs["daemon log"] or "[REDACTED]" in outputs["daemon log"]
    assert "[REDACTED]" in outputs["/api/status"] and "[REDACTED]" in outputs["probe credentials"]
    assert stack.vendor.hits("/encoded") and "invalid key" in outputs["/api/status"]  # the excerpt is shown
    assert "exit 2" in outputs["check-config (broken)"] and "exit 2" in outputs["check-config (the reload that failed)"]
    assert len(stack.slack.requests) >= 4  # three failures and a delivery at least

    (tmp_path / "searched.json").write_text(json.dumps(outputs, indent=1))  # to look at when this fails
    found = {where: hits for where, text in outputs.items() if (hits := leaks(text, stack.secrets()))}
    assert not found, json.dumps(found, indent=1)
