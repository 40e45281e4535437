"""Pause a whole workflow while 20 runs execute on two workers (issue 18): no step starts after the pause
commits (checked from the event logs), runs started meanwhile are created and wait, nothing is lost across a
worker restart, and every run completes after the resume."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from tests.pauses.test_pause_runs import starts_while_paused
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from worker.client import RuntimeClient
from worker.config import Settings

REFUND = """
name: refund
steps:
  - {id: s1, uses: python, with: {function: "tests.support.wf_funcs:sleep_for", args: {seconds: 0.5}}}
  - {id: s2, uses: python, needs: [s1], with: {function: "tests.support.wf_funcs:sleep_for", args: {seconds: 0.5}}}
  - {id: s3, uses: python, needs: [s2], with: {function: "tests.support.wf_funcs:sleep_for", args: {seconds: 0.5}}}
"""


async def _statuses(client: RuntimeClient, run_ids: list[str]) -> Counter[str]:
    rows = await client.pool.fetch("SELECT status FROM runs WHERE run_id = ANY($1::uuid[])", run_ids)
    return Counter(r["status"] for r in rows)


async def _starts_after(client: RuntimeClient, run_ids: list[str], after: float) -> list[tuple[str, str]]:
    rows = await client.pool.fetch(
        """SELECT run_id::text, step_id FROM events WHERE run_id = ANY($1::uuid[]) AND type = 'step.started'
             AND ts > to_timestamp($2)""", run_ids, after)
    return [(r["run_id"][:8], r["step_id"]) for r in rows]


async def test_a_paused_workflow_starts_nothing_on_two_workers_nor_after_a_restart_and_all_complete_after_resume(
        settings: Settings) -> None:
    write_workflow(settings, "refund.yaml", REFUND)
    async with client_for(settings) as client:
        # 10 runs at most per worker: the 20 runs need both
        async with running_worker(settings, worker_id="pause-a", concurrency=10), \
                running_worker(settings, worker_id="pause-b", concurrency=10):
            # created in one call (20 calls one by one took long enough on a loaded machine for the first
            # runs to finish before the pause, and the test asks that all 20 are caught mid-run)
            runs = [str(r) for r in await client.start_runs("refund", [{}] * 20)]

            async def some_in_flight() -> bool:
                n = await client.pool.fetchval(
                    "SELECT count(DISTINCT run_id) FROM events WHERE run_id = ANY($1::uuid[]) "
                    "AND type = 'step.started'", runs)
                return n >= 10

            await eventually(some_in_flight, 20, interval=0.02, what="runs in flight")
            owners = {r["lease_owner"] for r in await client.pool.fetch(
                "SELECT lease_owner FROM runs WHERE lease_owner IS NOT NULL")}
            assert owners == {"pause-a", "pause-b"}
            done = await client.pause_workflow("refund", reason="double charging", by="oncall")
            returned = time.time()
            assert sorted(done.runs) == sorted(runs) and done.unsettled == []
            late = [await client.start_run("refund") for _ in range(2)]  # created while paused: they wait

            async def all_parked() -> bool:
                return await _statuses(client, runs + late) == Counter({"paused": 22})

            await eventually(all_parked, 60, interval=0.05, what="all 22 runs parked as paused")  # slow machines
            await asyncio.sleep(0.5)
            assert await _starts_after(client, runs + late, returned) == []
            paused_list = await client.paused_workflows()
            assert [(w.workflow, w.by, w.reason, w.runs, w.parked) for w in paused_list] == [
                ("refund", "oncall", "double charging", 22, 22)]
            summary = (await client.get_run(late[0])).summary
            assert summary.paused is not None and summary.paused.scope == "workflow"

        # a restart changes nothing: the pause is a row, the runs stay parked
        async with running_worker(settings, worker_id="pause-c"):
            await asyncio.sleep(1.0)
            assert await _statuses(client, runs + late) == Counter({"paused": 22})
            assert await _starts_after(client, runs + late, returned) == []
            resumed = await client.resume_workflow("refund", by="oncall")
            assert len(resumed.runs) == 22
            finals = [await client.wait_for_run(r, timeout=60) for r in runs + late]
            logs = {r: list((await client.get_run(r)).events) for r in runs + late}
    assert [s.status.value for s in finals] == ["completed"] * 22
    for run_id, events in logs.items():
        assert starts_while_paused(events) == [], run_id
        completed = Counter(e.step_id for e in events if e.type == "step.completed")
        assert completed == Counter({"s1": 1, "s2": 1, "s3": 1}), (run_id, completed)
        types = [e.type for e in events]
        assert types.count("run.paused") == 1 and types.count("run.unpaused") == 1, (run_id, types)
    for run_id in late:  # created during the pause: their first step started after the resume
        types = [e.type for e in logs[run_id]]
        assert types.index("run.unpaused") < types.index("step.started")
