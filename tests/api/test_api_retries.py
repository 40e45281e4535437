"""Retry over HTTP under the version you just fixed (issue 18: "and the API when it exists")."""

from __future__ import annotations

import httpx

from tests.support.api_server import bearer, make_token
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from tests.worker.e2e.test_retry_current_version import BROKEN, FIXED
from worker.config import Settings


async def test_retry_a_failed_run_under_the_fixed_version_over_http(settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "refunds.yaml", BROKEN)
    token = await make_token(settings, "oncall-bot", "runs:write", "runs:read")
    reader = await make_token(settings, "dashboard", "runs:read")
    async with running_worker(settings), client_for(settings) as client:
        normal = await client.start_run("refunds")
        legacy = await client.start_run("refunds", {"legacy": True})
        for run_id in (normal, legacy):
            assert (await client.wait_for_run(run_id, timeout=30)).status.value == "failed"
        (info,) = await client.list_workflows()
        broken = info.def_hash
        write_workflow(settings, "refunds.yaml", FIXED)

        async def reloaded() -> bool:
            (now,) = await client.list_workflows()
            return now.def_hash not in (None, broken)

        await eventually(reloaded, 20, what="the fixed version active")
        options = (await api.get(f"/v1/runs/{normal}/retry", headers=bearer(reader))).json()
        assert options["changed"] and options["compatible"] and options["default"] == "current"
        assert (await api.post(f"/v1/runs/{normal}/retry", headers=bearer(reader))).status_code == 403
        r = await api.post(f"/v1/runs/{normal}/retry", json={"version": "current"}, headers=bearer(token))
        assert r.status_code == 201, r.text
        retried = r.json()
        assert retried["retry_of"] == normal and retried["version"] == "current" and retried["def_hash"] != broken
        assert r.headers["location"] == f"/v1/runs/{retried['run_id']}"
        refused = await api.post(f"/v1/runs/{legacy}/retry", json={"version": "current"}, headers=bearer(token))
        assert refused.status_code == 409
        assert "'legacy_refund', where it stopped, is not in the current version" in refused.json()["error"]["message"]
        bad = await api.post(f"/v1/runs/{normal}/retry", json={"version": "latest"}, headers=bearer(token))
        assert bad.status_code == 422
        summary = await client.wait_for_run(retried["run_id"], timeout=30)
        trail = [(a.action, a.actor) for a in await client.audit_records(run_id=normal)]
    assert summary.status.value == "completed" and summary.def_hash == retried["def_hash"]
    assert ("replay", "api:oncall-bot") in trail
