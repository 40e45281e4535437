"""Pause and resume one run (issue 18, "stop the bleeding"): the step in flight finishes (or, with --now,
is interrupted and runs again on resume), no further step starts, the run holds no worker, and it goes on
where it stopped when resumed. Observed from the run's event log, its row and the audit trail."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.runtime import client_for, eventually, running_worker, wait_status, write_workflow
from worker.client import RuntimeClient
from worker.config import Settings
from worker.errors import Conflict, NotFound

THREE = """
name: three
inputs: {first: {type: number, default: 0.6}}
steps:
  - {id: s1, uses: python, with: {function: "tests.support.wf_funcs:sleep_for", args: {seconds: "${{ inputs.first }}"}}}
  - {id: s2, uses: python, needs: [s1], with: {function: "tests.support.wf_funcs:sleep_for", args: {seconds: 0.05}}}
  - {id: s3, uses: set, needs: [s2], with: {done: true}}
output: "${{ steps.s3.output.done }}"
"""


async def _step_running(client: RuntimeClient, run_id: str, step: str) -> None:
    async def check() -> bool:
        detail = await client.get_run(run_id)
        return any(s.step_id == step and s.status.value == "running" for s in detail.steps)

    await eventually(check, 20, interval=0.02, what=f"{step} of {run_id} running")


def starts_while_paused(events: list) -> list[str]:  # type: ignore[type-arg]
    """step.started events between a run.paused and the next run.unpaused (must be none)."""
    paused, found = False, []
    for e in events:
        if e.type == "run.paused":
            paused = True
        elif e.type == "run.unpaused":
            paused = False
        elif e.type == "step.started" and paused:
            found.append(f"{e.step_id}#{e.attempt} (seq {e.seq})")
    return found


async def test_a_paused_run_finishes_its_step_starts_no_other_holds_no_worker_and_resumes(settings: Settings) -> None:
    write_workflow(settings, "three.yaml", THREE)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("three")
        await _step_running(client, run_id, "s1")
        done = await client.pause_run(run_id, reason="refund API is double charging", by="alice")
        assert done.target == run_id and done.unsettled == []  # returned once s1 was recorded and the run parked
        await wait_status(client, run_id, "paused")
        detail = await client.get_run(run_id)
        summary = detail.summary
        assert summary.paused is not None
        assert (summary.paused.by, summary.paused.reason, summary.paused.scope) == (
            "alice", "refund API is double charging", "run")
        steps = {s.step_id: s.status.value for s in detail.steps}
        assert steps["s1"] == "completed" and steps.get("s2", "pending") == "pending"
        types = [e.type for e in detail.events]
        assert "run.paused" in types and starts_while_paused(list(detail.events)) == []
        holder = await client.pool.fetchval("SELECT lease_owner FROM runs WHERE run_id = $1", run_id)
        assert holder is None  # parked: no worker slot

        await asyncio.sleep(0.3)  # nothing moves while paused
        assert (await client.get_run(run_id)).summary.status.value == "paused"
        with pytest.raises(Conflict, match="already paused"):
            await client.pause_run(run_id, by="bob")

        resumed = await client.resume_run(run_id, by="alice")
        assert not resumed.still_paused
        summary = await client.wait_for_run(run_id, timeout=20)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed" and detail.output is True
    assert summary.paused is None
    types = [e.type for e in detail.events]
    assert types.index("run.paused") < types.index("run.unpaused")
    assert [e.step_id for e in detail.events if e.type == "step.started"] == ["s1", "s2", "s3"]
    assert starts_while_paused(list(detail.events)) == []
    async with client_for(settings) as client:
        trail = [(r.action, r.actor, r.reason) for r in await client.audit_records(run_id=run_id)]
    assert ("pause", "alice", "refund API is double charging") in trail and ("resume", "alice", None) in trail


async def test_pause_now_interrupts_the_step_in_flight_and_it_runs_again_on_resume(settings: Settings) -> None:
    write_workflow(settings, "three.yaml", THREE)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("three", {"first": 3.0})
        await _step_running(client, run_id, "s1")
        started = time.monotonic()
        await client.pause_run(run_id, reason="stop now", now=True, by="alice")
        await wait_status(client, run_id, "paused", timeout=10)
        assert time.monotonic() - started < 2.5  # did not wait for the 3 s step
        detail = await client.get_run(run_id)
        (s1,) = [s for s in detail.steps if s.step_id == "s1"]
        assert "interrupted by pause --now (alice)" in (s1.attempts[0].error or "")
        assert detail.summary.paused is not None and detail.summary.paused.now
        await client.resume_run(run_id, by="alice")
        summary = await client.wait_for_run(run_id, timeout=30)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed"
    (s1,) = [s for s in detail.steps if s.step_id == "s1"]
    assert [a.status for a in s1.attempts] == ["interrupted", "completed"]
    assert starts_while_paused(list(detail.events)) == []


async def test_pausing_a_finished_run_or_resuming_one_not_paused_is_a_conflict(settings: Settings) -> None:
    write_workflow(settings, "three.yaml", THREE)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("three", {"first": 0.0})
        await client.wait_for_run(run_id, timeout=20)
        with pytest.raises(Conflict, match="already completed"):
            await client.pause_run(run_id)
        with pytest.raises(Conflict, match="not paused"):
            await client.resume_run(run_id)
        with pytest.raises(NotFound, match="no workflow 'thre'"):  # a typo pauses nothing
            await client.pause_workflow("thre", reason="oops")
