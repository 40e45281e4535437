"""Approvals decided over HTTP (policy, conflicts, audit) and a run's events as Server-Sent Events."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.support.api_server import bearer, make_token
from tests.support.runtime import client_for, eventually, pending_task, running_worker, write_workflow
from worker.config import Settings

GATE = """
    name: gate
    steps:
      - {id: ask, uses: approval, with: {prompt: "ship it?"}}
      - {id: ship, uses: set, with: {shipped: true}}
    """

CHAIN = """
    name: chain
    steps:
      - {id: a, uses: set, with: {n: 1}}
      - {id: b, uses: sleep, with: {duration: 300ms}}
      - {id: c, uses: set, with: {n: 3}}
    """


async def test_an_approval_decided_over_http_resumes_the_run_and_is_audited(
        settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "gate.yaml", GATE)
    token = await make_token(settings, "release-bot", "runs:write", "runs:read", "approvals:decide")
    reader = await make_token(settings, "dashboard", "runs:read")
    async with running_worker(settings), client_for(settings) as client:
        run_id = (await api.post("/v1/runs", json={"workflow": "gate"}, headers=bearer(token))).json()["run_id"]
        task = await pending_task(client, run_id)
        listed = (await api.get("/v1/approvals", headers=bearer(reader))).json()["approvals"]
        no_scope = await api.post(f"/v1/approvals/{task.task_id}", json={"decision": "approve"},
                                  headers=bearer(reader))
        no_reason = await api.post(f"/v1/approvals/{task.task_id}", json={"decision": "reject"},
                                   headers=bearer(token))
        bad = await api.post(f"/v1/approvals/{task.task_id}", json={"decision": "maybe"}, headers=bearer(token))
        ok = await api.post(f"/v1/approvals/{task.task_id}", json={"decision": "approve", "reason": "green CI"},
                            headers=bearer(token))
        second = await api.post(f"/v1/approvals/{task.task_id}", json={"decision": "reject", "reason": "too late"},
                                headers=bearer(token))

        async def completed() -> bool:
            return (await client.get_run(run_id)).summary.status.value == "completed"

        await eventually(completed, 20, what="the approved run completed")
        records = await client.audit_records(run_id=run_id)
    assert [(t["task_id"], t["prompt"]) for t in listed] == [(task.task_id, "ship it?")]
    assert no_scope.status_code == 403
    assert no_reason.status_code == 422 and "needs a reason" in no_reason.json()["error"]["message"]
    assert bad.status_code == 422 and "decision" in bad.json()["error"]["message"]
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "approved" and ok.json()["decided_by"] == "api:release-bot"
    assert second.status_code == 409 and "already" in second.json()["error"]["message"]
    approvals = [(a.actor, a.origin, a.outcome, a.reason) for a in records if a.action == "approve"]
    assert approvals[0] == ("api:release-bot", "api 127.0.0.1", "approved", "green CI")


async def read_sse(api: httpx.AsyncClient, path: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every SSE message of the stream until it ends (each as {"id", "event", "data"})."""
    import json

    messages: list[dict[str, Any]] = []
    async with api.stream("GET", path, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        async for line in r.aiter_lines():
            if line == "":
                if "event" in current:
                    messages.append(current)
                current = {}
            elif line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
    return messages


async def test_a_runs_events_stream_live_and_resume_after_last_event_id(
        settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "chain.yaml", CHAIN)
    token = await make_token(settings, "watcher", "runs:write", "runs:read")
    h = bearer(token)
    async with running_worker(settings), client_for(settings) as client:
        run_id = (await api.post("/v1/runs", json={"workflow": "chain"}, headers=h)).json()["run_id"]
        live = await read_sse(api, f"/v1/runs/{run_id}/events", h)  # from the start, while it runs, to the end
        committed = (await client.get_run(run_id)).events
        # a client that saw up to some event reconnects: it gets the rest, once each
        cut = live[3]["id"]
        rest = await read_sse(api, f"/v1/runs/{run_id}/events", {**h, "Last-Event-ID": str(cut)})
        bad = await api.get(f"/v1/runs/{run_id}/events", headers={**h, "Last-Event-ID": "yesterday"})
        missing = await api.get("/v1/runs/00000000-0000-0000-0000-000000000000/events", headers=h)
    events = [m for m in live if m["event"] != "end"]
    assert [m["id"] for m in events] == [e.seq for e in committed]
    assert [m["event"] for m in events] == [e.type for e in committed]
    assert events[-1]["event"] == "run.completed"
    assert live[-1]["event"] == "end" and live[-1]["data"]["status"] == "completed"
    assert [m["id"] for m in rest if m["event"] != "end"] == [e.seq for e in committed if e.seq > cut]
    assert rest[-1]["event"] == "end"
    assert bad.status_code == 400 and missing.status_code == 404


async def test_many_event_streams_at_once_each_end_with_their_run(settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "chain.yaml", CHAIN)
    token = await make_token(settings, "watchers", "runs:write", "runs:read")
    h = bearer(token)
    async with running_worker(settings):
        ids = [(await api.post("/v1/runs", json={"workflow": "chain"}, headers=h)).json()["run_id"] for _ in range(8)]
        streams = await asyncio.gather(*(read_sse(api, f"/v1/runs/{i}/events", h) for i in ids))
    for run_id, messages in zip(ids, streams, strict=True):
        assert messages[-1]["event"] == "end" and messages[-1]["data"]["run_id"] == run_id
        assert messages[-2]["event"] == "run.completed"
