"""Multi-step flows against a real loopback API that needs cleaning up after: values handed from step to
step (JSON, headers, status), the failing step named, cleanup that always runs (and is skipped when there
is nothing to clean), one deadline for the whole flow, per-step results and phases, GraphQL steps, auth."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from oauth2_server import CLIENT_ID, CLIENT_SECRET, OAuth2Server
from targets import LoopbackApp

from checks.base import ProbeContext
from checks.flow import FlowCheckConfig, probe
from integration_kit.errors import ErrorClass
from integration_kit.redact import MASK, Redactor
from integration_kit.results import CheckResult
from monitor.metrics import Metrics
from monitor.recorder import Recorder
from monitor.settings import ConfigError, parse_config

E = ErrorClass


class ObjectsApi(LoopbackApp):
    """POST /objects creates, GET /objects/{id} reads, DELETE /objects/{id} deletes; ``live`` is what a
    flow left behind. ``broken`` names a step to fail with a 503; ``slow`` delays a step's answer by seconds;
    ``answered`` counts the answers given per step (a request whose client gave up first is not counted)."""

    def __init__(self) -> None:
        self.live: dict[str, dict[str, Any]] = {}
        self.broken: set[str] = set()
        self.slow: dict[str, float] = {}
        self.answered: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self._ids = itertools.count(1)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/objects", self._create)
        app.router.add_get("/objects/{id}", self._read)
        app.router.add_delete("/objects/{id}", self._delete)
        app.router.add_post("/graphql", self._graphql)

    async def _seen(self, request: web.Request, step: str) -> bytes:
        body = await request.read()
        self.requests.append((request.method, request.path_qs, dict(request.headers), body))
        if step in self.slow:
            await asyncio.sleep(self.slow[step])
        self.answered[step] += 1
        return body

    async def _create(self, request: web.Request) -> web.Response:
        body = json.loads(await self._seen(request, "create"))
        if "create" in self.broken:
            return web.json_response({"error": "unavailable"}, status=503)
        oid = f"obj_{next(self._ids)}"
        self.live[oid] = {"id": oid, **body}
        return web.json_response({"id": oid, "session": "sess_CANARY_handed_over"}, status=201,
                                 headers={"ETag": f'"v1-{oid}"', "Location": f"/objects/{oid}"})

    async def _read(self, request: web.Request) -> web.Response:
        await self._seen(request, "read")
        if "read" in self.broken:
            return web.json_response({"error": "unavailable"}, status=503)
        found = self.live.get(request.match_info["id"])
        return web.json_response(found) if found else web.json_response({"error": "not found"}, status=404)

    async def _delete(self, request: web.Request) -> web.Response:
        await self._seen(request, "delete")
        if "delete" in self.broken:
            return web.json_response({"error": "unavailable"}, status=503)
        self.live.pop(request.match_info["id"], None)
        return web.Response(status=204)

    async def _graphql(self, request: web.Request) -> web.Response:
        payload = json.loads(await self._seen(request, "graphql"))
        found = self.live.get(payload.get("variables", {}).get("id", ""))
        return web.json_response({"data": {"object": found}})


@pytest.fixture
async def api() -> AsyncIterator[ObjectsApi]:
    async with ObjectsApi() as server:
        yield server


def flow(api: ObjectsApi, **fields: Any) -> FlowCheckConfig:
    config: dict[str, Any] = {
        "name": "roundtrip", "kind": "flow", "timeout": "5s",
        "steps": [
            {"name": "create", "method": "POST", "url": api.url("/objects"), "json": {"name": "probe", "n": 1},
             "expect": {"status": [201], "json": {"$.id": {"type": "string"}}}},
            {"name": "read", "url": api.url("/objects/${steps.create.json.id}"),
             "headers": {"If-None-Match": "${steps.create.headers.ETag}", "X-Session": "${steps.create.json.session}"},
             "expect": {"json": {"$.name": {"equals": "probe"}}}},
        ],
        "cleanup": [{"name": "delete", "method": "DELETE", "url": api.url("/objects/${steps.create.json.id}"),
                     "expect": {"status": [204], "body_required": False}}],
        **fields,
    }
    return FlowCheckConfig.model_validate(config)


async def run(check: FlowCheckConfig, redactor: Redactor | None = None) -> CheckResult:
    ctx = ProbeContext(integration="crm", redactor=redactor or Redactor(check.secret_values()))
    return await probe(check, ctx)


async def test_values_flow_from_step_to_step_and_cleanup_runs(api: ObjectsApi) -> None:
    redactor = Redactor()
    result = await run(flow(api), redactor)
    assert result.ok, result
    assert [(s.name, s.cleanup, s.ok, s.status_code) for s in result.steps] == [
        ("create", False, True, 201), ("read", False, True, 200), ("delete", True, True, 204)]
    create, read, delete = api.requests
    assert json.loads(create[3]) == {"name": "probe", "n": 1}
    assert read[1] == "/objects/obj_1" and read[2]["If-None-Match"] == '"v1-obj_1"'
    assert delete[:2] == ("DELETE", "/objects/obj_1")
    assert api.live == {}  # cleaned up
    assert result.attempts == 3 and result.attempt_classes == (None, None, None)
    assert set(result.phases) >= {"connect", "ttfb"} and all(s.phases for s in result.steps)
    assert result.phases["ttfb"] == pytest.approx(sum(s.phases["ttfb"] for s in result.steps))
    # A value a response handed over and a later request sent as a header is a credential from now on.
    assert redactor.text("sess_CANARY_handed_over") == MASK


async def test_the_failing_step_is_named_and_cleanup_still_runs(api: ObjectsApi) -> None:
    api.broken.add("read")
    result = await run(flow(api))
    assert (result.error_class, result.detail) == (E.HTTP_5XX, "http_5xx: step read: 503 Service Unavailable")
    assert result.request is not None and result.request.url.endswith("/objects/obj_1")
    assert [(s.name, s.ok) for s in result.steps] == [("create", True), ("read", False), ("delete", True)]
    assert api.live == {}


async def test_a_missing_value_fails_the_step_that_needs_it_and_cleanup_is_skipped(api: ObjectsApi) -> None:
    check = flow(api, steps=[
        {"name": "create", "method": "POST", "url": api.url("/objects"), "json": {"name": "probe"}},
        {"name": "read", "url": api.url("/objects/${steps.create.json.data.id}")},
    ], cleanup=[{"name": "delete", "method": "DELETE", "url": api.url("/objects/${steps.create.json.data.id}"),
                 "expect": {"body_required": False}}])
    result = await run(check)
    assert (result.error_class, result.detail) == (
        E.MISSING_FIELD, "missing_field: step read: ${steps.create.json.data.id}")
    assert [(s.name, s.ok, s.skipped) for s in result.steps] == [
        ("create", True, False), ("read", False, False), ("delete", True, True)]
    assert [r[0] for r in api.requests] == ["POST"]  # read and delete never sent


async def test_a_failed_create_skips_the_cleanup_that_has_nothing_to_delete(api: ObjectsApi) -> None:
    api.broken.add("create")
    result = await run(flow(api))
    assert result.detail == "http_5xx: step create: 503 Service Unavailable"
    assert [(s.name, s.skipped) for s in result.steps] == [("create", False), ("delete", True)]


async def test_a_failing_cleanup_fails_the_flow_and_is_named(api: ObjectsApi) -> None:
    api.broken.add("delete")
    result = await run(flow(api))
    assert (result.error_class, result.detail) == (E.HTTP_5XX, "http_5xx: cleanup delete: 503 Service Unavailable")
    api.broken.add("read")
    both = await run(flow(api))
    assert both.detail == "http_5xx: step read: 503 Service Unavailable (cleanup delete also failed: http_5xx)"


def had(detail: str) -> float:
    """The seconds a timed-out step had by its detail (``within 998ms``, ``within 2.1s``): the product's own
    account of its deadline; 0 when it began at or past it (a loop that woke late)."""
    assert detail.startswith("timeout: "), detail
    if detail.endswith(" (deadline passed)"):
        return 0.0
    within = re.search(r" within (\d+(?:\.\d)?)(ms|s)$", detail)
    assert within is not None, detail
    return float(within[1]) / (1000 if within[2] == "ms" else 1)


async def test_one_deadline_for_the_whole_flow_with_time_kept_for_cleanup(api: ObjectsApi) -> None:
    api.slow["read"] = 3.0
    result = await run(flow(api, timeout="2500ms", cleanup_timeout="1500ms"))
    # The steps had the flow's timeout less the time kept for cleanup (the read: that, less the create's time),
    # and that deadline ended the read, not the vendor's late answer (the server runs on this loop: a deadline
    # due first is met first, however late the loop wakes; no bound on seconds, which would measure the machine).
    assert result.detail.startswith("timeout: step read: no response headers within "), result.detail
    assert had(result.steps[1].detail) <= 1.0
    assert api.answered["read"] == 0
    assert [(s.name, s.ok) for s in result.steps][-1] == ("delete", True)
    assert api.live == {}


async def test_a_hanging_cleanup_ends_at_the_flows_deadline(api: ObjectsApi) -> None:
    api.slow["read"] = api.slow["delete"] = 3.0
    result = await run(flow(api, timeout="1500ms", cleanup_timeout="500ms"))
    read, delete = result.steps[1:]
    assert read.detail.startswith("timeout: no response headers within "), read.detail
    assert had(read.detail) <= 1.0
    # The cleanup has what is left of the flow's one deadline (the 0.5 s kept), not a deadline of its own.
    assert delete.error_class is E.TIMEOUT and had(delete.detail) <= 0.5
    assert result.detail == read.detail.replace("timeout: ", "timeout: step read: ") + (
        " (cleanup delete also failed: timeout)")
    assert api.answered["read"] == api.answered["delete"] == 0
    assert list(api.live) == ["obj_1"]  # what a hanging vendor leaves behind, and the detail says so


async def test_graphql_steps_and_step_retry(api: ObjectsApi) -> None:
    check = flow(api, steps=[
        {"name": "create", "method": "POST", "url": api.url("/objects"), "json": {"name": "probe"}},
        {"name": "query", "kind": "graphql", "url": api.url("/graphql"),
         "query": "query($id: ID!) { object(id: $id) { id name } }", "variables": {"id": "${steps.create.json.id}"},
         "expect": {"json": {"$.data.object.name": {"equals": "probe"}}}, "retry": {"attempts": 2}},
    ])
    result = await run(check)
    assert result.ok, result
    query = json.loads(api.requests[1][3])
    assert query["variables"] == {"id": "obj_1"}


async def test_steps_use_the_flows_auth(api: ObjectsApi) -> None:
    async with OAuth2Server() as vendor:
        auth = {"kind": "oauth2_client_credentials", "token_url": vendor.token_url, "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET}
        result = await run(flow(api, auth=auth))
    assert result.ok, result
    assert {r[2].get("Authorization") for r in api.requests} == {f"Bearer {vendor.issued[0]}"}
    assert len(vendor.token_requests) == 1
    assert result.steps[0].phases["token"] > 0


def test_flow_config_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("""
integrations:
  a:
    checks:
      - name: f
        kind: flow
        timeout: 2s
        cleanup_timeout: 3s
        steps:
          - {name: read, url: "http://127.0.0.1:1/objects/${steps.create.json.id}"}
          - {name: read, url: "http://127.0.0.1:1/x"}
        cleanup:
          - {name: delete, method: DELETE, url: "http://127.0.0.1:1/objects/${steps.nope.status}"}
""", env={})
    [(path, message)] = info.value.problems
    assert path == "integrations.a.checks[0]"
    assert message == (
        "steps[1].name: duplicate step name 'read' (also steps[0]); "
        "steps[0]: ${steps.create.json.id} names a step that has not run by then (earlier steps: none); "
        "cleanup[0]: ${steps.nope.status} names a step that has not run by then (earlier steps: delete, read); "
        "cleanup_timeout must be shorter than timeout (it is kept out of it for cleanup)"
    )


async def test_step_series_follow_the_steps_that_ran(api: ObjectsApi) -> None:
    metrics = Metrics()
    recorder = Recorder(metrics, Redactor())

    def step(name: str, family: str = "integration_probe_step_success") -> float | None:
        labels = {"integration": "crm", "check": "roundtrip", "step": name}
        return metrics.registry.get_sample_value(family, labels)

    recorder.record(await run(flow(api)))
    assert (step("create"), step("read"), step("delete")) == (1.0, 1.0, 1.0)
    assert step("read", "integration_probe_step_duration_seconds") > 0
    api.broken.add("create")
    recorder.record(await run(flow(api)))
    assert (step("create"), step("read"), step("delete")) == (0.0, None, None)  # the others did not run
    assert recorder.status.get("crm", "roundtrip").as_dict()["steps"][1] == {
        "name": "delete", "cleanup": True, "ok": True, "skipped": True, "error_class": None, "detail": "",
        "status_code": None, "duration_seconds": 0.0, "attempts": 0, "phases": {}}
    recorder.forget("crm", "roundtrip")
    assert step("create") is None and step("read", "integration_probe_step_duration_seconds") is None
