"""The HTTP API over real HTTP: a real `agentrt serve`, a real worker, real Postgres and Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.support.api_server import bearer, make_token
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from worker.config import Settings

ECHO = """
    name: echo
    inputs:
      who: {type: string}
    steps:
      - {id: greet, uses: set, with: {greeting: "hello ${{ inputs.who }}"}}
    """

NAP = """
    name: nap
    steps:
      - {id: wait, uses: sleep, with: {duration: 30s}}
    """


async def until_finished(api: httpx.AsyncClient, token: str, run_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def finished() -> bool:
        r = await api.get(f"/v1/runs/{run_id}", headers=bearer(token))
        found.update(r.json())
        return r.status_code == 200 and found["status"] in ("completed", "failed", "cancelled")

    await eventually(finished, 30, what=f"run {run_id} finished")
    return found


async def test_a_run_started_over_http_runs_and_is_read_back(settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "echo.yaml", ECHO)
    token = await make_token(settings, "ci", "runs:write", "runs:read")
    async with running_worker(settings):
        r = await api.post("/v1/runs", json={"workflow": "echo", "inputs": {"who": "ops"}}, headers=bearer(token))
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["created"] is True and created["workflow"] == "echo"
        assert r.headers["location"] == f"/v1/runs/{created['run_id']}"
        run = await until_finished(api, token, created["run_id"])
        listed = await api.get("/v1/runs", params={"workflow": "echo", "status": "completed"}, headers=bearer(token))
    assert run["status"] == "completed" and run["error"] is None
    assert run["steps"][0]["output"] == {"greeting": "hello ops"}
    assert run["inputs"] == {"who": "ops"}
    assert [x["run_id"] for x in listed.json()["runs"]] == [created["run_id"]]
    async with client_for(settings) as client:  # the run records who asked
        detail = await client.get_run(created["run_id"])
    assert detail.events[0].data["requested_by"] == "api:ci"


async def test_an_idempotency_key_starts_one_run_even_when_replayed_concurrently(
        settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "echo.yaml", ECHO)
    token = await make_token(settings, "webhooks", "runs:write", "runs:read")
    body = {"workflow": "echo", "inputs": {"who": "ticket-7"}}
    headers = {**bearer(token), "Idempotency-Key": "ticket-7-created"}
    answers = await asyncio.gather(*(api.post("/v1/runs", json=body, headers=headers) for _ in range(50)))
    assert sorted({a.status_code for a in answers}) == [200, 201], [a.text for a in answers[:3]]
    assert sum(a.status_code == 201 for a in answers) == 1
    assert len({a.json()["run_id"] for a in answers}) == 1
    again = await api.post("/v1/runs", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["run_id"] == answers[0].json()["run_id"]
    assert again.json()["created"] is False
    other = await api.post("/v1/runs", json={**body, "inputs": {"who": "someone else"}}, headers=headers)
    assert other.status_code == 409
    assert "idempotency key 'ticket-7-created' was used for another request" in other.json()["error"]["message"]
    async with client_for(settings) as client:
        runs = await client.list_runs(workflow="echo", limit=100)
    assert len(runs) == 1
    # the key belongs to the token's principal: another caller's same key is its own
    token_b = await make_token(settings, "other-service", "runs:write")
    mine = await api.post("/v1/runs", json=body, headers={**bearer(token_b), "Idempotency-Key": "ticket-7-created"})
    assert mine.status_code == 201 and mine.json()["run_id"] != answers[0].json()["run_id"]


async def test_bad_requests_get_a_json_error_and_start_nothing(settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "echo.yaml", ECHO)
    token = await make_token(settings, "ci", "runs:write", "runs:read")
    h = bearer(token)
    cases: list[tuple[int, str, httpx.Response]] = [
        (404, "no active workflow named 'nope'", await api.post("/v1/runs", json={"workflow": "nope"}, headers=h)),
        (422, "who", await api.post("/v1/runs", json={"workflow": "echo", "inputs": {}}, headers=h)),
        (422, "who", await api.post("/v1/runs", json={"workflow": "echo", "inputs": {"who": 5}}, headers=h)),
        (400, "not valid JSON", await api.post("/v1/runs", content=b'{"workflow": ', headers={
            **h, "Content-Type": "application/json"})),
        (422, "input: Extra inputs are not permitted",
         await api.post("/v1/runs", json={"workflow": "echo", "input": {"who": "x"}}, headers=h)),
        (422, "workflow", await api.post("/v1/runs", json={"inputs": {}}, headers=h)),
        (413, "larger than", await api.post("/v1/runs", json={"workflow": "echo", "inputs": {"who": "x" * 2_000_000}},
                                             headers=h)),
        (422, "limit", await api.get("/v1/runs", params={"limit": 0}, headers=h)),
        (422, "status", await api.get("/v1/runs", params={"status": "exploded"}, headers=h)),
        (404, "no run", await api.get("/v1/runs/00000000-0000-0000-0000-000000000000", headers=h)),
        (404, "no such endpoint", await api.get("/v1/nothing-here", headers=h)),
        (400, "traceparent", await api.post("/v1/runs", json={"workflow": "echo", "inputs": {"who": "x"}},
                                            headers={**h, "traceparent": "garbage"})),
    ]
    for status, words, r in cases:
        assert r.status_code == status, (status, words, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json"), r.headers
        assert words in r.json()["error"]["message"], (words, r.json())
    # a body over the limit sent without a length (chunked) is refused too
    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 64_000

    chunked = await api.post("/v1/runs", content=chunks(), headers={**h, "Content-Type": "application/json"})
    assert chunked.status_code == 413, chunked.text
    async with client_for(settings) as client:
        assert await client.list_runs(limit=10) == []
    assert (await api.get("/healthz")).status_code == 200  # the server is still up


async def test_cancel_over_http_is_audited_as_the_token(settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "nap.yaml", NAP)
    token = await make_token(settings, "oncall-bot", "runs:write", "runs:read")
    async with running_worker(settings):
        run_id = (await api.post("/v1/runs", json={"workflow": "nap"}, headers=bearer(token))).json()["run_id"]
        r = await api.post(f"/v1/runs/{run_id}/cancel", json={"reason": "stop the bleeding"}, headers=bearer(token))
        assert r.status_code == 200, r.text
        run = await until_finished(api, token, run_id)
        again = await api.post(f"/v1/runs/{run_id}/cancel", headers=bearer(token))
    assert run["status"] == "cancelled"
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]
    async with client_for(settings) as client:
        records = await client.audit_records(run_id=run_id)
    cancel = [a for a in records if a.action == "cancel"]
    assert [(a.actor, a.origin, a.reason) for a in cancel] == [("api:oncall-bot", "api 127.0.0.1",
                                                                "stop the bleeding")]


async def test_health_and_openapi(settings: Settings, api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "checks": {"postgres": "ok",
                                                                                        "redis": "ok"}}
    spec = (await api.get("/openapi.json")).json()
    assert {"/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/events", "/v1/runs/{run_id}/cancel",
            "/v1/approvals", "/v1/approvals/{task_id}", "/healthz", "/readyz"} <= set(spec["paths"])
    assert "Idempotency-Key" in str(spec["paths"]["/v1/runs"]["post"]).replace("idempotency-key", "Idempotency-Key")
