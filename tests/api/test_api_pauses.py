"""Pause and resume over HTTP: the same rules and audit trail as the CLI, as the token's principal."""

from __future__ import annotations

import httpx

from tests.pauses.test_pause_runs import THREE
from tests.support.api_server import bearer, make_token
from tests.support.runtime import client_for, running_worker, wait_status, write_workflow
from worker.config import Settings


async def test_pause_and_resume_a_run_and_a_workflow_over_http(settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "three.yaml", THREE)
    token = await make_token(settings, "oncall-bot", "runs:write", "runs:read")
    reader = await make_token(settings, "dashboard", "runs:read")
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("three", {"first": 1.0})
        r = await api.post(f"/v1/runs/{run_id}/pause", json={"reason": "bad refunds"}, headers=bearer(token))
        assert r.status_code == 200, r.text
        assert r.json()["target"] == run_id and r.json()["runs"] == [run_id]
        await wait_status(client, run_id, "paused")
        got = (await api.get(f"/v1/runs/{run_id}", headers=bearer(token))).json()
        assert got["status"] == "paused"
        assert (got["paused"]["by"], got["paused"]["reason"], got["paused"]["scope"]) == (
            "api:oncall-bot", "bad refunds", "run")
        again = await api.post(f"/v1/runs/{run_id}/pause", headers=bearer(token))
        assert again.status_code == 409 and "already paused" in again.json()["error"]["message"]
        denied = await api.post(f"/v1/runs/{run_id}/resume", headers=bearer(reader))
        assert denied.status_code == 403

        r = await api.post("/v1/workflows/three/pause", json={"reason": "all", "now": True}, headers=bearer(token))
        assert r.status_code == 200, r.text
        listed = (await api.get("/v1/paused", headers=bearer(reader))).json()
        assert [w["workflow"] for w in listed["workflows"]] == ["three"]
        assert [x["run_id"] for x in listed["runs"]] == [run_id]
        assert (await api.post(f"/v1/runs/{run_id}/resume", headers=bearer(token))).json()["still_paused"] is True
        r = await api.post("/v1/workflows/three/resume", headers=bearer(token))
        assert r.status_code == 200 and r.json()["runs"] == [run_id]
        assert (await api.post("/v1/workflows/three/resume", headers=bearer(token))).status_code == 409
        summary = await client.wait_for_run(run_id, timeout=20)
        trail = [(a.action, a.actor) for a in await client.audit_records(run_id=run_id)]
    assert summary.status.value == "completed"
    assert ("pause", "api:oncall-bot") in trail and ("resume", "api:oncall-bot") in trail
