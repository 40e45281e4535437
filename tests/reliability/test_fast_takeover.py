"""Fast death detection with the production lease settings (15 s TTL, 2 s heartbeat): the runs of a worker killed
with -9 have a new committed event within seconds (its liveness lock is free: worker/engine/liveness.py), while a
worker that is merely frozen (SIGSTOP 5 s) keeps its runs."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from tests.support.chaos import ChaosStack, chaos_stack, until
from tests.support.runtime import http_chain

PRODUCTION = {"AGENTRT_LEASE_TTL": "15", "AGENTRT_HEARTBEAT_INTERVAL": "2", "AGENTRT_RECONCILE_INTERVAL": "2",
              "AGENTRT_REDELIVER_AFTER": "30"}


async def _held_by(stack: ChaosStack, name: str) -> list[str]:
    rows = await stack.client.pool.fetch(
        "SELECT run_id::text FROM runs WHERE lease_owner = $1 AND status NOT IN ('completed', 'failed')",
        stack.worker_ids[name])
    return [r["run_id"] for r in rows]


async def _start(stack: ChaosStack, runs: int) -> list[str]:
    for i in range(1, 7):
        stack.sink.set_delay(f"/step{i}", 2.0)  # 12 s a run: still running when the victim goes
    stack.write("chain.yaml", http_chain(6))
    victim = stack.start_worker("victim", PRODUCTION)
    await stack.wait_ready(victim)
    await stack.wait_workflows({"chain"})
    return [await stack.client.start_run("chain", {"sink": stack.sink.url}) for _ in range(runs)]


async def test_the_runs_of_a_killed_worker_move_within_seconds_with_a_15s_lease() -> None:
    async with chaos_stack(lease_ttl=15.0) as stack:
        runs = await _start(stack, 8)
        heir = stack.start_worker("heir", PRODUCTION)
        await stack.wait_ready(heir)
        await asyncio.sleep(4.5)  # the heir judges others once its own liveness lock is two heartbeats old
        held = await _held_by(stack, "victim")
        assert held, "the victim holds no run to lose"
        stack.procs.procs[0].kill()
        killed = datetime.now(tz=UTC)

        async def all_moved() -> bool:
            n = await stack.client.pool.fetchval(
                """SELECT count(DISTINCT run_id) FROM events WHERE run_id = ANY($1::uuid[]) AND ts > $2""",
                held, killed)
            return n == len(held)

        moved_in = await until(all_moved, 14, "every run the victim held has a new committed event", interval=0.05)
        finals = [await stack.client.wait_for_run(r, timeout=60) for r in runs]
        resumed = await stack.client.pool.fetch(
            "SELECT DISTINCT run_id::text FROM events WHERE type = 'run.resumed' AND data->>'previous_owner' = $1",
            stack.worker_ids["victim"])
        consumers = {c["name"].decode() for lane in stack.keys.work_lanes.values()
                     for c in stack.redis_client().xinfo_consumers(lane, "workers")}
    assert stack.worker_ids["victim"] not in consumers  # the dead worker's consumer is gone from the groups
    assert stack.worker_ids["heir"] in consumers
    # with the lease alone this takes the TTL (15 s) plus a reconcile pass; the lock makes it about a second
    assert moved_in < 4.0, moved_in
    assert {r["run_id"] for r in resumed} == set(held)
    assert all(f.status.value == "completed" for f in finals), [f.error for f in finals]


async def test_a_frozen_worker_keeps_its_runs() -> None:
    async with chaos_stack(lease_ttl=15.0) as stack:
        runs = await _start(stack, 4)
        heir = stack.start_worker("heir", PRODUCTION)
        await stack.wait_ready(heir)
        await asyncio.sleep(4.5)
        held = await _held_by(stack, "victim")
        assert held
        victim = stack.procs.procs[0]
        victim.sigstop()  # a GC pause, a VM pause: alive, and its connections stay open
        stopped_at = time.monotonic()
        try:
            await asyncio.sleep(5.0)
            taken = await stack.client.pool.fetchval(
                "SELECT count(*) FROM runs WHERE run_id = ANY($1::uuid[]) AND lease_owner <> $2",
                held, stack.worker_ids["victim"])
        finally:
            victim.sigcont()
        frozen_for = time.monotonic() - stopped_at
        finals = [await stack.client.wait_for_run(r, timeout=60) for r in runs]
        resumed = await stack.client.pool.fetchval(
            "SELECT count(*) FROM events WHERE type = 'run.resumed' AND data->>'previous_owner' = $1",
            stack.worker_ids["victim"])
    assert frozen_for >= 5.0 and taken == 0 and resumed == 0
    assert all(f.status.value == "completed" for f in finals), [f.error for f in finals]
