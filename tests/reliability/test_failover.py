"""A Postgres primary failover under load: kill -9 the primary, promote its synchronous replica, and the
runs go on.

Two worker processes and the test's client use the multi-host DSN of `tests/support/replica.py`
(`host1:p1,host2:p2/db?target_session_attrs=read-write`), so every new connection lands on whichever server
accepts writes. 36 six-step http workflows run against the HTTP sink (24 started before the failover, 12
through the client after it). Mid-way the test snapshots, from the primary, every event and every
completed run; waits until the replica has flushed the WAL up to that snapshot (Postgres shows a commit to
other sessions on the primary a moment before the synchronous standby acknowledged it, and only then is it
acknowledged to the worker); kills the primary with SIGKILL and, a second later (the time a failover
manager takes to decide), promotes the replica.

Checked: every run completes; no event or completed run from the snapshot is missing afterwards; no step
completed twice; each (run, step) effect reached the sink under one idempotency key (the same key sent
again by a retry is fine: the sink's side counts it once); both workers survive and hold their liveness
locks on the new primary again (fast death detection works after the failover). Printed: completed,
duplicated, lost, and the seconds from the kill to the first commit on the new primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from tests.support.chaos import ChaosStack, audit_runs, until, wait_all_terminal
from tests.support.http_sink import HttpSink
from tests.support.replica import ReplicatedPostgres
from tests.support.runtime import http_chain
from tests.support.services import WorkerProcs, worker_environment
from worker.client import RuntimeClient
from worker.config import Settings
from worker.devstack import EmbeddedRedis
from worker.store.migrate import migrate

STEPS = 6
BEFORE, AFTER = 24, 12
BATCHES = 3


async def _snapshot(primary_url: str) -> tuple[set[tuple[str, int, str]], set[str]]:
    """Every event and every completed run of `chain` on the primary, once the synchronous standby has
    flushed the WAL that holds them (then each of them was acknowledged to its worker, or will be)."""
    conn = await asyncpg.connect(primary_url)
    try:
        async with conn.transaction(isolation="repeatable_read"):
            events = {(r["run_id"], r["seq"], r["type"]) for r in await conn.fetch(
                "SELECT e.run_id::text, e.seq, e.type FROM events e JOIN runs r USING (run_id)"
                " WHERE r.workflow = 'chain'")}
            done = {r["run_id"] for r in await conn.fetch(
                "SELECT run_id::text FROM runs WHERE workflow = 'chain' AND status = 'completed'")}
            lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        for _ in range(600):
            if await conn.fetchval(
                    "SELECT coalesce(bool_and(flush_lsn >= $1::text::pg_lsn), false) FROM pg_stat_replication", lsn):
                return events, done
            await asyncio.sleep(0.01)
        raise AssertionError("the replica did not flush the snapshot's WAL within 6 s")
    finally:
        await conn.close()


async def _first_commit_after(url: str, baseline: int, t_kill: float, timeout: float = 120.0) -> float:
    """Seconds from the kill until the new primary holds more events than `baseline` (polled every 50 ms)."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if int(await conn.fetchval("SELECT count(*) FROM events")) > baseline:
                return time.monotonic() - t_kill
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError(f"no new commit on the promoted replica within {timeout:.0f}s")


async def test_runs_continue_through_a_primary_failover() -> None:
    root = Path(tempfile.mkdtemp(prefix="agentrt-failover-"))
    os.chmod(root, 0o755)  # Postgres runs as an unprivileged user when we are root
    pair = ReplicatedPostgres(root / "pg")
    rd = EmbeddedRedis(root / "redis")
    sink = HttpSink().start()
    procs: WorkerProcs | None = None
    stack: ChaosStack | None = None
    try:
        await asyncio.to_thread(pair.start)
        await asyncio.to_thread(rd.start)
        await asyncio.to_thread(pair.create_database, "agentrt")
        await migrate(pair.primary_url("agentrt"))
        workflows = root / "workflows"
        workflows.mkdir()
        settings = Settings(
            database_url=pair.url("agentrt"), redis_url=rd.url(), redis_prefix=f"f-{uuid.uuid4().hex[:6]}",
            workflows_dir=workflows, lease_ttl=3.0, heartbeat_interval=0.5, reconcile_interval=0.5,
            redeliver_after=3.0, http_allowed_hosts=("127.0.0.1", "localhost"), log_level="INFO")
        env = worker_environment(settings)
        env["AGENTRT_LOG_LEVEL"] = "INFO"
        (root / "logs").mkdir()
        procs = WorkerProcs(env=env, log_dir=root / "logs")
        client = await RuntimeClient.connect(settings)
        stack = ChaosStack(root, pair.primary, rd, settings, sink, procs, client)
        for i in range(1, STEPS + 1):
            sink.set_delay(f"/step{i}", 0.4)
        stack.write("chain.yaml", http_chain(STEPS))
        workers = [stack.start_worker() for _ in range(2)]
        for w in workers:
            await stack.wait_ready(w)
        await stack.wait_workflows({"chain"})

        inputs = {"sink": sink.url}
        for batch in range(BATCHES):  # staggered: at the kill, some runs are done, some mid-way, some new
            if batch:
                await asyncio.sleep(1.0)
            await stack.client.start_runs("chain", [inputs] * (BEFORE // BATCHES))

        async def some_done() -> bool:
            n = await stack.client.pool.fetchval("SELECT count(*) FROM runs WHERE status = 'completed'")
            return int(n) >= BEFORE // BATCHES // 2

        await until(some_done, 60, "the first runs completed")
        events_before, done_before = await _snapshot(pair.primary_url("agentrt"))
        await asyncio.to_thread(pair.kill_primary)
        t_kill = time.monotonic()
        await asyncio.sleep(1.0)  # a failover manager's decision time
        await asyncio.to_thread(pair.promote)
        conn = await asyncpg.connect(pair.replica_url("agentrt"))
        try:
            baseline = int(await conn.fetchval("SELECT count(*) FROM events"))
        finally:
            await conn.close()
        first_commit_s = await _first_commit_after(pair.replica_url("agentrt"), baseline, t_kill)

        await stack.reconnect()  # the test's own client: its pool's connections died with the primary
        await stack.client.start_runs("chain", [inputs] * AFTER)
        drain_s = await wait_all_terminal(stack, "chain", 180)
        audit = await audit_runs(stack, "chain", STEPS)
        pool = stack.client.pool
        events_after = {(r["run_id"], r["seq"], r["type"]) for r in await pool.fetch(
            "SELECT e.run_id::text, e.seq, e.type FROM events e JOIN runs r USING (run_id)"
            " WHERE r.workflow = 'chain'")}
        done_after = {r["run_id"] for r in await pool.fetch(
            "SELECT run_id::text FROM runs WHERE workflow = 'chain' AND status = 'completed'")}

        async def liveness_back() -> bool:  # fast death detection works again: each worker holds its lock
            n = await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                    "'agentrt-liveness:%' AND wait_event_type IS DISTINCT FROM 'Lock'")
            locks = await pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
            return int(n) == len(workers) and int(locks) >= len(workers)

        await until(liveness_back, 60, "both workers holding their liveness lock on the new primary")
        alive = [w.alive() for w in workers]
        crashed = [line for w in workers for line in w.log_text().splitlines() if "actor crashed" in line]
    finally:
        if procs is not None:
            procs.kill_all()
        if stack is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stack.client.close(), 10)
        sink.stop()
        await asyncio.to_thread(rd.stop, 15)
        await asyncio.to_thread(pair.stop)
        shutil.rmtree(root, ignore_errors=True)

    lost_events = events_before - events_after
    lost_runs = done_before - done_after
    figures = {"runs": audit.started, "completed": audit.completed, "completed_before_kill": len(done_before),
               "events_before_kill": len(events_before), "lost": len(lost_events) + len(lost_runs),
               "duplicated": audit.steps_completed_twice + (audit.distinct_effects - audit.completed * STEPS),
               "resent_same_key": audit.duplicate_requests, "kill_to_first_commit_s": round(first_commit_s, 2),
               "drain_s": round(drain_s, 1)}
    print(f"\nfailover: {figures}")  # noqa: T201 - the figures, with -s
    assert audit.started == BEFORE + AFTER, figures
    assert audit.completed == audit.started, (figures, audit.by_status)
    assert not lost_events and not lost_runs, (figures, sorted(lost_events)[:10], sorted(lost_runs)[:10])
    assert audit.steps_completed_twice == 0, figures
    assert audit.runs_missing_steps == 0, figures
    assert audit.started_before_predecessor == 0, figures
    assert audit.distinct_effects == audit.completed * STEPS, figures
    assert audit.unexpected_keys == 0, figures
    assert all(alive), alive
    assert not crashed, crashed[:5]
