"""Finding runs the way on-call people search (issue 18): filters that combine (workflow, status, step, error
text, started within, waiting on what or whom), saved as named views, on `agentrt runs` and the client."""

from __future__ import annotations

import json

import pytest

from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from tests.worker.e2e.test_cli import agentrt
from worker.config import Settings
from worker.errors import NotFound, WorkerError
from worker.search.filters import RunFilter

REFUND = """
name: refund
inputs: {fail: {type: boolean, default: false}, gate: {type: boolean, default: false}}
steps:
  - id: charge
    uses: python
    when: "${{ inputs.fail }}"
    with: {function: "tests.support.wf_funcs:always_fail", args: {message: "HTTP 502 from payments"}}
    retry: {max_attempts: 1}
  - id: ask
    uses: approval
    needs: [charge]
    when: "${{ inputs.gate }}"
    with: {prompt: "refund?", approvers: [fred]}
"""
OTHER = """
name: other
steps:
  - id: boom
    uses: python
    with: {function: "tests.support.wf_funcs:always_fail", args: {message: "HTTP 502 from payments"}}
    retry: {max_attempts: 1}
"""


async def test_filters_combine_and_saved_views_are_shared(settings: Settings) -> None:
    write_workflow(settings, "refund.yaml", REFUND)
    write_workflow(settings, "other.yaml", OTHER)
    async with running_worker(settings), client_for(settings) as client:
        failed = await client.start_run("refund", {"fail": True})
        gated = await client.start_run("refund", {"gate": True})
        done = await client.start_run("refund")
        other = await client.start_run("other")
        for run_id in (failed, done, other):
            await client.wait_for_run(run_id, timeout=30)

        async def gate_waiting() -> bool:
            return (await client.get_run(gated)).summary.waiting_on == "human"

        await eventually(gate_waiting, 20, what="the gated run waiting on a human")

        async def ids(**kw: str) -> set[str]:
            return {r.run_id for r in await client.list_runs(filters=RunFilter(**kw))}

        assert await ids(error="http 502") == {failed, other}  # literal, case-insensitive
        assert await ids(error="http 502", workflow="refund") == {failed}
        assert await ids(status="failed", since="1h") == {failed, other}
        assert await ids(status="completed", since="1h") == {done}
        assert await ids(waiting="human") == {gated}
        (listed,) = await client.list_runs(filters=RunFilter(waiting="human"))
        assert listed.waiting_for == "fred"  # whom it waits for, shown before opening it
        code, out, err = await agentrt(settings, "runs", "--waiting-on", "human")
        assert code == 0 and "⏸ human: fred" in out, (out, err)
        assert await ids(waiting="fred") == {gated}  # may decide its pending task
        assert await ids(waiting="mallory") == set()
        assert await ids(step="ask") == {gated}
        assert await ids(error="502 (") == set()  # not a regex: no error, no match
        with pytest.raises(WorkerError, match="is not a duration"):
            RunFilter(since="a fortnight")

        code, out, err = await agentrt(settings, "runs", "--workflow", "refund", "--error", "502",
                                       "--save-view", "failing-refunds", "--json")
        assert code == 0, err
        assert "saved view failing-refunds: workflow=refund error=502" in err
        assert [r["run_id"] for r in json.loads(out)] == [failed]
        code, out, err = await agentrt(settings, "runs", "--view", "failing-refunds", "--json")
        assert code == 0 and [r["run_id"] for r in json.loads(out)] == [failed], err
        code, out, err = await agentrt(settings, "runs", "--view", "failing-refunds", "--status", "completed",
                                       "--json")
        assert code == 0 and json.loads(out) == [], err  # flags narrow the view
        code, out, err = await agentrt(settings, "views", "--json")
        assert code == 0, err
        (view,) = json.loads(out)
        assert view["name"] == "failing-refunds" and view["filters"] == {"workflow": "refund", "error": "502"}
        code, out, err = await agentrt(settings, "runs", "--view", "nope")
        assert code == 4 and "no saved view 'nope' (saved: failing-refunds)" in err
        code, out, err = await agentrt(settings, "runs", "--status", "failed", "--save-view", "Bad Name!")
        assert code != 0 and "a view name is lowercase letters" in err
        await client.delete_view("failing-refunds")
        with pytest.raises(NotFound):
            await client.get_view("failing-refunds")


async def test_the_regex_search_also_reads_what_a_run_waits_on(settings: Settings) -> None:
    write_workflow(settings, "refund.yaml", REFUND)
    async with running_worker(settings), client_for(settings) as client:
        gated = await client.start_run("refund", {"gate": True})

        async def waiting() -> bool:
            return (await client.get_run(gated)).summary.waiting_on == "human"

        await eventually(waiting, 20, what="the gated run waiting on a human")
        found = [r.run_id for r in await client.list_runs(search="^hum")]
    assert found == [gated]
