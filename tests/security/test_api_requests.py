"""Hostile requests to the HTTP API: tokens never rest in plain sight, and no request takes the server down
or reaches past what its token and the policy allow."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.support.api_server import ApiServer, bearer, make_token
from tests.support.runtime import client_for, write_workflow
from tests.support.vault_support import dump_database, dump_redis
from worker.config import Settings


async def test_tokens_appear_nowhere_but_in_the_callers_hands(settings: Settings, api: httpx.AsyncClient,
                                                              api_server: ApiServer) -> None:
    write_workflow(settings, "echo.yaml", "name: echo\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")
    token = await make_token(settings, "ci", "runs:read", "runs:write")
    guessed = "agentrt_" + "G" * 43  # a well-formed token nobody issued
    answers = [
        await api.post("/v1/runs", json={"workflow": "echo"}, headers=bearer(token)),
        await api.post("/v1/runs", json={"workflow": "nope"}, headers=bearer(token)),
        await api.post("/v1/approvals/abc", json={"decision": "approve"}, headers=bearer(token)),
        await api.get("/v1/runs", headers=bearer(guessed)),
        await api.post("/v1/runs", content=b"{not json", headers={**bearer(token), "Content-Type": "application/json"}),
    ]
    assert [a.status_code for a in answers] == [201, 404, 403, 401, 400]
    places = {
        "pg_dump": await asyncio.to_thread(dump_database, settings.database_url),
        "redis": await asyncio.to_thread(dump_redis, settings.redis_url, settings.redis_prefix),
        "API server log": api_server.log(),
        "responses": "\n".join(a.text for a in answers),
    }
    for where, text in places.items():
        assert token not in text and token.removeprefix("agentrt_") not in text, where
        assert guessed not in text, where


async def test_hostile_requests_get_clear_errors_and_the_server_stays_up(settings: Settings,
                                                                         api: httpx.AsyncClient) -> None:
    write_workflow(settings, "echo.yaml", "name: echo\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")
    token = await make_token(settings, "fuzzer", "runs:read", "runs:write", "approvals:decide")
    h = bearer(token)
    deep = "[" * 5000 + "]" * 5000
    answers = {
        "regex and SQL in a filter": await api.get("/v1/runs", params={"workflow": "x' OR 1=1 --.*"}, headers=h),
        "a path in a run id": await api.get("/v1/runs/..%2F..%2Fetc%2Fpasswd", headers=h),
        "a prefix that is every run": await api.get("/v1/runs/%25", headers=h),
        "an idempotency key too long": await api.post("/v1/runs", json={"workflow": "echo"},
                                                      headers={**h, "Idempotency-Key": "k" * 300}),
        "a control character in the key": await api.post("/v1/runs", json={"workflow": "echo"},
                                                         headers={**h, "Idempotency-Key": "a\tb"}),
        "deeply nested inputs": await api.post("/v1/runs", content=f'{{"workflow": "echo", "inputs": {{"x": {deep}}}}}',
                                               headers={**h, "Content-Type": "application/json"}),
        "a JSON array for a body": await api.post("/v1/runs", json=["echo"], headers=h),
        "a decision that is not one": await api.post("/v1/approvals/abcd", json={"decision": "approve; DROP"},
                                                     headers=h),
        "a task id that is not one": await api.post("/v1/approvals/'%20OR%201=1", json={"decision": "approve"},
                                                    headers=h),
        "a negative Last-Event-ID": await api.get("/v1/runs/00000000-0000-0000-0000-000000000000/events",
                                                  headers={**h, "Last-Event-ID": "-5"}),
        "a header line too long": await api.get("/v1/runs", headers={**h, "X-Junk": "j" * 60_000}),
    }
    for what, r in answers.items():
        assert r.status_code < 500, (what, r.status_code, r.text)
        if r.status_code != 200:
            assert "message" in json.loads(r.text)["error"], (what, r.text)
    assert answers["regex and SQL in a filter"].json() == {"runs": []}
    assert answers["a path in a run id"].status_code == 404
    assert answers["a prefix that is every run"].status_code == 404
    assert answers["an idempotency key too long"].status_code == 422
    assert answers["a control character in the key"].status_code == 422
    assert answers["deeply nested inputs"].status_code in (400, 422)
    assert answers["a JSON array for a body"].status_code == 422
    assert answers["a decision that is not one"].status_code == 422
    assert answers["a task id that is not one"].status_code == 404
    assert (await api.get("/readyz")).status_code == 200
    async with client_for(settings) as client:
        assert await client.list_runs(limit=10) == []  # none of it started a run


async def test_event_data_is_data_never_an_expression(settings: Settings, api: httpx.AsyncClient) -> None:
    from tests.support.runtime import eventually, running_worker

    write_workflow(settings, "triage.yaml", """
        name: triage
        on: {event: {name: ticket.created}}
        inputs: {ticket_id: {type: string}}
        steps:
          - {id: look, uses: set, with: {looked_at: "${{ inputs.ticket_id }}"}}
        """)
    token = await make_token(settings, "outsider", "events:write")
    hostile = "${{ secrets.api.token }}${{ env.VAULT_TOKEN }}{{ 7 * 7 }}"
    async with running_worker(settings), client_for(settings) as client:
        await client.register_local("triage")
        r = await api.post("/v1/events", json={"name": "ticket.created", "data": {"ticket_id": hostile}},
                           headers=bearer(token))
        assert r.status_code == 202, r.text
        (run_id,) = r.json()["started"]

        async def done() -> bool:
            return (await client.get_run(run_id)).summary.status.value == "completed"

        await eventually(done, 20, what="the run completed")
        detail = await client.get_run(run_id)
    assert detail.steps[0].output == {"looked_at": hostile}  # the text as sent, not evaluated
