"""Concurrency keys across worker processes and a kill -9: a slot belongs to its run, not its worker.

Two `agentrt worker` processes drive 100 runs over 5 keys with limit 1; the one holding the most runs is
killed mid-way. Its runs keep their keys' slots (nothing else of those keys starts) until a survivor
resumes them after their leases expire; every run completes, and the event log shows no two runs of a key
between first step and end at once.
"""

from __future__ import annotations

import asyncio

from tests.support.flow import keyed_workflow, overlaps, run_intervals
from tests.support.runtime import client_for, eventually, write_workflow
from tests.support.services import WorkerProcs
from worker.config import Settings


async def test_a_killed_workers_runs_keep_their_slots_and_every_run_completes_without_overlap(
        settings: Settings, worker_procs: WorkerProcs) -> None:
    write_workflow(settings, "keyed.yaml", keyed_workflow(limit=1, seconds=0.1, steps=2))
    procs = [worker_procs.start(name=n) for n in ("a", "b")]
    for p in procs:
        p.wait_for_log(f"worker test-{p.name}", timeout=30)
    async with client_for(settings) as client:
        ids = await client.start_runs("keyed", [{"customer": str(i % 5)} for i in range(100)])

        async def both_busy() -> bool:
            owners = {r["lease_owner"] for r in await client.pool.fetch(
                "SELECT lease_owner FROM runs WHERE lease_owner IS NOT NULL")}
            return len(owners) == 2

        await eventually(both_busy, timeout=30, interval=0.05, what="both workers driving runs")
        await asyncio.sleep(1.0)
        busiest = await client.pool.fetchval(
            "SELECT lease_owner FROM runs WHERE lease_owner IS NOT NULL "
            "GROUP BY lease_owner ORDER BY count(*) DESC LIMIT 1")
        victim = next(p for p in procs if busiest.startswith(f"test-{p.name}-"))
        victim.kill()
        held = {str(r["run_id"]): r["concurrency_key"] for r in await client.pool.fetch(
            "SELECT run_id, concurrency_key FROM runs WHERE lease_owner = $1 AND status = 'running'", busiest)}
        summaries = [await client.wait_for_run(run_id, timeout=180) for run_id in ids]
        intervals = await run_intervals(client, ids)
        resumed = {str(r["run_id"]) for r in await client.pool.fetch(
            "SELECT DISTINCT run_id FROM events WHERE type = 'run.resumed' AND run_id = ANY($1::uuid[])", ids)}
    assert all(s.status.value == "completed" for s in summaries), [s.error for s in summaries if s.error]
    assert held, "the killed worker held no running run"
    assert set(held) <= resumed  # its runs went on elsewhere, in their slots
    assert overlaps(intervals) == [], overlaps(intervals)
    assert sum(len(v) for v in intervals.values()) == 100
    assert all(p.alive() for p in procs if p is not victim)
