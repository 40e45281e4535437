"""Priorities end to end: under contention for a worker's slots high runs go first, without starving the
rest (weighted 4:2:1); the workflow's `priority:`, a run's own (CLI, API, client), and a child's (its parent's)."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.support.api_server import bearer, make_token
from tests.support.flow import start_order
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from tests.worker.e2e.test_cli import agentrt
from worker.config import Settings

NAP = """
name: nap
steps:
  - {id: s, uses: python, with: {function: "tests.support.wf_funcs:sleep_for", args: {seconds: 0.25}}}
"""


async def test_high_runs_submitted_later_start_first_and_low_runs_still_progress(settings: Settings) -> None:
    write_workflow(settings, "nap.yaml", NAP)
    async with running_worker(settings, concurrency=1), client_for(settings) as client:
        lows = await client.start_runs("nap", [{}] * 12, priority="low")

        async def two_started() -> bool:
            return len(await start_order(client, lows)) >= 2

        await eventually(two_started, timeout=30, interval=0.02, what="the low backlog started")
        highs = [await client.start_run("nap", priority="high") for _ in range(8)]
        for run_id in lows + highs:
            assert (await client.wait_for_run(run_id, timeout=60)).status.value == "completed"
        order = await start_order(client, lows + highs)
        priorities = {r.run_id: r.priority for r in await client.list_runs(workflow="nap", limit=100)}
    kinds = "".join("h" if run_id in highs else "l" for run_id in order)
    first_high, last_high = kinds.index("h"), kinds.rindex("h")
    # the highs jump the queue: all 8 start within 11 starts of the first one (4:1 with no normal runs waiting
    # gives two lows among them), before most of the lows
    assert last_high - first_high <= 10, kinds
    assert kinds[last_high + 1:].count("l") >= 5, kinds
    # and the lows are not starved meanwhile: at least one low starts between the first and the last high
    assert "l" in kinds[first_high:last_high], kinds
    assert {priorities[r] for r in lows} == {"low"} and {priorities[r] for r in highs} == {"high"}


async def test_workflow_priority_is_the_default_and_a_run_may_override_it(settings: Settings,
                                                                         api: httpx.AsyncClient) -> None:
    write_workflow(settings, "urgent.yaml", """
        name: urgent
        priority: high
        inputs: {customer: {type: string, default: acme}}
        concurrency: {key: "${{ inputs.customer }}", limit: 5}
        steps:
          - {id: a, uses: set, with: {x: 1}}
    """)
    token = await make_token(settings, "ci", "runs:write", "runs:read")
    async with running_worker(settings), client_for(settings) as client:
        default = await client.start_run("urgent")
        rc, out, err = await agentrt(settings, "run", "urgent", "--priority", "low", "--json")
        assert rc == 0, err
        by_cli = json.loads(out)
        assert by_cli["status"] == "pending"
        r = await api.post("/v1/runs", json={"workflow": "urgent", "priority": "normal", "inputs": {"customer": "x"}},
                           headers=bearer(token))
        assert r.status_code == 201 and r.json()["status"] == "pending", r.text
        by_api = r.json()["run_id"]
        bad = await api.post("/v1/runs", json={"workflow": "urgent", "priority": "urgent"}, headers=bearer(token))
        rc_bad, _, err_bad = await agentrt(settings, "run", "urgent", "--priority", "urgent")
        for run_id in (default, by_cli["run_id"], by_api):
            await client.wait_for_run(run_id, timeout=30)
        got = await api.get(f"/v1/runs/{by_api}", headers=bearer(token))
        listed = await api.get("/v1/runs", params={"workflow": "urgent"}, headers=bearer(token))
    assert (await _priority(settings, default), await _priority(settings, by_cli["run_id"])) == ("high", "low")
    assert got.json()["priority"] == "normal" and got.json()["concurrency_key"] == "x"
    assert got.json()["queue"] is None
    assert {x["priority"] for x in listed.json()["runs"]} == {"high", "low", "normal"}
    assert bad.status_code == 422 and "priority" in bad.text
    assert rc_bad == 2 and "invalid choice: 'urgent'" in err_bad


async def _priority(settings: Settings, run_id: str) -> str:
    async with client_for(settings) as client:
        return (await client.get_run(run_id)).summary.priority


async def test_a_child_run_takes_its_parents_priority(settings: Settings) -> None:
    write_workflow(settings, "child.yaml", """
        name: child
        steps:
          - {id: a, uses: set, with: {x: 1}}
    """)
    write_workflow(settings, "parent.yaml", """
        name: parent
        steps:
          - {id: call, uses: workflow, with: {workflow: child}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        parent = await client.start_run("parent", priority="low")
        assert (await client.wait_for_run(parent, timeout=30)).status.value == "completed"
        detail = await client.get_run(parent)
        child = (await client.get_run(detail.children[0])).summary
    assert child.priority == "low"
    await asyncio.sleep(0)
