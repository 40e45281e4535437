"""Events from outside start the runs of workflows with `on: {event: ...}`: over HTTP, from the CLI, once per key."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from tests.support.api_server import bearer, make_token
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from tests.support.services import REPO_ROOT, worker_environment
from worker.config import Settings
from worker.definitions.loader import load_text
from worker.errors import DefinitionError

TRIAGE = """
    name: triage
    on: {event: {name: ticket.created}}
    inputs:
      ticket_id: {type: string}
    steps:
      - {id: look, uses: set, with: {looked_at: "${{ inputs.ticket_id }}"}}
    """

AUDIT = """
    name: audit-trail
    on: {event: {name: ticket.created}}
    steps:
      - {id: note, uses: set, with: {noted: true}}
    """

OTHER = """
    name: other
    on: {event: {name: payment.settled}}
    steps:
      - {id: x, uses: set, with: {x: 1}}
    """


async def test_an_event_starts_one_run_per_subscribed_workflow(settings: Settings, api: httpx.AsyncClient) -> None:
    for name, text in (("triage.yaml", TRIAGE), ("audit.yaml", AUDIT), ("other.yaml", OTHER)):
        write_workflow(settings, name, text)
    token = await make_token(settings, "helpdesk", "events:write", "runs:read")
    async with running_worker(settings), client_for(settings) as client:
        await eventually(lambda: _subscribed(client, "ticket.created", 2), 20, what="the workflows are loaded")
        r = await api.post("/v1/events", json={"name": "ticket.created", "key": "T-7", "data": {"ticket_id": "T-7"}},
                           headers=bearer(token))
        assert r.status_code == 202, r.text
        body = r.json()
        assert len(body["started"]) == 2 and body["refused"] == [] and body["replayed"] is False

        async def all_done() -> bool:
            statuses = [(await client.get_run(i)).summary.status.value for i in body["started"]]
            return statuses == ["completed"] * len(statuses)

        await eventually(all_done, 20, what="both runs completed")
        details = {d.summary.workflow: d for d in [await client.get_run(i) for i in body["started"]]}
    assert set(details) == {"triage", "audit-trail"}
    assert details["triage"].steps[0].output == {"looked_at": "T-7"}
    created = details["triage"].events[0].data
    assert created["requested_by"] == "event:ticket.created"
    assert created["trigger"] == {"kind": "event", "event_id": body["event_id"], "name": "ticket.created",
                                  "key": "T-7"}


async def _subscribed(client: object, name: str, count: int) -> bool:
    return len(await client.subscribers(name)) == count  # type: ignore[attr-defined]


async def test_an_idempotency_key_delivers_an_event_once(settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "triage.yaml", TRIAGE)
    token = await make_token(settings, "webhook-relay", "events:write")
    async with client_for(settings) as client:
        await client.register_local("triage")
    h = {**bearer(token), "Idempotency-Key": "delivery-81"}
    event = {"name": "ticket.created", "key": "T-81", "data": {"ticket_id": "T-81"}}
    answers = await asyncio.gather(*(api.post("/v1/events", json=event, headers=h) for _ in range(20)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["event_id"] for a in answers}) == 1
    assert len({tuple(a.json()["started"]) for a in answers}) == 1 and len(answers[0].json()["started"]) == 1
    assert sum(not a.json()["replayed"] for a in answers) == 1
    other = await api.post("/v1/events", json={**event, "key": "T-82"}, headers=h)
    assert other.status_code == 409 and "used for another event" in other.json()["error"]["message"]
    async with client_for(settings) as client:
        assert len(await client.list_runs(workflow="triage")) == 1


async def test_data_that_does_not_fit_a_workflows_inputs_is_reported_and_starts_nothing(
        settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "triage.yaml", TRIAGE)
    token = await make_token(settings, "helpdesk", "events:write")
    reader = await make_token(settings, "reader", "runs:read")
    async with client_for(settings) as client:
        await client.register_local("triage")
    r = await api.post("/v1/events", json={"name": "ticket.created", "data": {"ticket": 5}}, headers=bearer(token))
    assert r.status_code == 202
    assert r.json()["started"] == []
    assert [x["workflow"] for x in r.json()["refused"]] == ["triage"]
    assert "ticket_id" in r.json()["refused"][0]["reason"]
    nobody = await api.post("/v1/events", json={"name": "nobody.listens"}, headers=bearer(token))
    assert nobody.status_code == 202 and nobody.json()["started"] == [] and nobody.json()["refused"] == []
    bad = await api.post("/v1/events", json={"name": "has spaces"}, headers=bearer(token))
    assert bad.status_code == 422 and "event name" in bad.json()["error"]["message"]
    denied = await api.post("/v1/events", json={"name": "ticket.created"}, headers=bearer(reader))
    assert denied.status_code == 403 and "events:write" in denied.json()["error"]["message"]


def test_send_event_from_the_cli(settings: Settings) -> None:
    write_workflow(settings, "triage.yaml", TRIAGE)
    env = worker_environment(settings)

    def agentrt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "worker", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=60)

    asyncio.run(_register(settings))
    sent = agentrt("send-event", "ticket.created", "--key", "T-1", "--data", '{"ticket_id": "T-1"}',
                   "--idempotency-key", "cli-1", "--json")
    assert sent.returncode == 0, sent.stderr
    delivery = json.loads(sent.stdout)
    assert len(delivery["started"]) == 1 and delivery["replayed"] is False
    again = json.loads(agentrt("send-event", "ticket.created", "--key", "T-1", "--data", '{"ticket_id": "T-1"}',
                               "--idempotency-key", "cli-1", "--json").stdout)
    assert again["event_id"] == delivery["event_id"] and again["replayed"] is True
    quiet = agentrt("send-event", "nobody.listens")
    assert quiet.returncode == 0 and "nothing subscribes to 'nobody.listens'" in quiet.stderr
    bad = agentrt("send-event", "ticket.created", "--data", "[1, 2]")
    assert bad.returncode == 2 and "JSON object" in bad.stderr


async def _register(settings: Settings) -> None:
    async with client_for(settings) as client:
        await client.register_local("triage")


def test_triggers_are_validated_with_their_location() -> None:
    ok = load_text("name: t\non: {event: {name: ticket.created}}\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")
    assert ok.spec.on is not None and ok.spec.on.event is not None and ok.spec.on.event.name == "ticket.created"
    cases = {
        "name: t\non: {event: {name: 'two words'}}\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n": "2:",
        "name: t\non: {event: {}}\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n": "2:",
        "name: t\non: {events: {name: x}}\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n": "2:",
        "name: t\non: true_thing\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n": "2:",
    }
    for text, where in cases.items():
        with pytest.raises(DefinitionError) as info:
            load_text(text, "t.yaml")
        assert f"t.yaml:{where}" in str(info.value), str(info.value)


WAITER = """
    name: waiter
    inputs:
      ticket: {type: string}
    steps:
      - {id: hold, uses: wait, with: {event: customer.replied, key: "${{ inputs.ticket }}", timeout: 1h}}
    """


async def test_an_event_over_http_resumes_a_waiting_run(settings: Settings, api: httpx.AsyncClient) -> None:
    write_workflow(settings, "waiter.yaml", WAITER)
    token = await make_token(settings, "helpdesk", "events:write", "runs:read", "runs:write")
    async with running_worker(settings), client_for(settings) as client:
        await eventually(lambda: client.register_local("waiter"), 20, what="the workflow is loaded")
        started = await api.post("/v1/runs", json={"workflow": "waiter", "inputs": {"ticket": "T-70"}},
                                 headers=bearer(token))
        run_id = started.json()["run_id"]

        async def parked() -> bool:
            body = (await api.get(f"/v1/runs/{run_id}", headers=bearer(token))).json()
            return body["status"] == "waiting"

        await eventually(parked, 20, what="the run waits for its event")
        body = (await api.get(f"/v1/runs/{run_id}", headers=bearer(token))).json()
        assert body["waiting_on"] == "event customer.replied key T-70" and body["wake_at"] is not None
        assert body["trigger"] == "api"
        r = await api.post("/v1/events", json={"name": "customer.replied", "key": "T-70", "data": {"text": "ok"}},
                           headers={**bearer(token), "Idempotency-Key": "reply-70"})
        assert r.status_code == 202 and r.json()["delivered_to"] == [run_id] and r.json()["started"] == []
        again = await api.post("/v1/events", json={"name": "customer.replied", "key": "T-70", "data": {"text": "ok"}},
                               headers={**bearer(token), "Idempotency-Key": "reply-70"})
        assert again.json()["replayed"] is True and again.json()["delivered_to"] == [run_id]

        async def done() -> bool:
            body = (await api.get(f"/v1/runs/{run_id}", headers=bearer(token))).json()
            return body["status"] == "completed"

        await eventually(done, 20, what="the run completed")
        out = (await api.get(f"/v1/runs/{run_id}", headers=bearer(token))).json()["output"]
        assert out["received"] is True and out["event"]["data"] == {"text": "ok"}
