"""AgentRuntime through a real PgBouncer 1.18 (Debian 12's) in transaction mode, with fewer server connections
than the workers' pools, so that transactions of different runs, workers and pools interleave on the same server
connections. Workers, the client and the approver reach Postgres only through the pooler
(AGENTRT_DATABASE_POOLER=transaction); the test itself watches Postgres directly.

The PgBouncer is restarted (SIGTERM: clients see their connections drop) while runs are in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.parse
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg

from tests.support.http_sink import HttpSink
from tests.support.pgbouncer import PgBouncer
from tests.support.runtime import client_for, http_chain, write_workflow
from tests.support.services import REPO_ROOT, PostgresService, WorkerProcs, unique_name
from worker.config import Settings
from worker.store.migrate import migration_files

RUNS = 40
HTTP_STEPS = ("s1", "s2", "s3")
WORKFLOW = """
name: pooled
inputs: {sink: {type: string}, customer: {type: string}}
concurrency: {key: "${{ inputs.customer }}", limit: 2}
steps:
  - id: s1
    uses: http
    with: {method: POST, url: "${{ inputs.sink }}/s1", json: {customer: "${{ inputs.customer }}"}}
    retry: {max_attempts: 20, initial_interval: 100ms, backoff: 1.5, max_interval: 1s}
  - {id: ask, uses: approval, with: {prompt: "ship it?"}}
  - id: s2
    uses: http
    with: {method: POST, url: "${{ inputs.sink }}/s2", json: {prev: "${{ steps.s1.output.status }}"}}
    retry: {max_attempts: 20, initial_interval: 100ms, backoff: 1.5, max_interval: 1s}
  - id: s3
    uses: http
    with: {method: POST, url: "${{ inputs.sink }}/s3", json: {prev: "${{ steps.s2.output.status }}"}}
    retry: {max_attempts: 20, initial_interval: 100ms, backoff: 1.5, max_interval: 1s}
output: "${{ steps.s3.output.status }}"
"""


def _db_name(url: str) -> str:
    return urllib.parse.urlsplit(url).path.lstrip("/")


def _pooled_env(url: str) -> dict[str, str]:
    return {"AGENTRT_DATABASE_URL": url, "AGENTRT_DATABASE_POOLER": "transaction"}


class Watch:
    """Samples, directly on Postgres and on PgBouncer's console, how many server connections the test database
    has and how many clients share them."""

    def __init__(self, direct: asyncpg.Connection, bouncer: PgBouncer, database: str) -> None:
        self.direct, self.bouncer, self.database = direct, bouncer, database
        self.max_servers = self.max_clients = self.max_waiting = self.samples = 0
        self.paused = False

    async def run(self) -> None:
        while True:
            servers = await self.direct.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            self.max_servers = max(self.max_servers, int(servers))
            if not self.paused:
                with contextlib.suppress(Exception):  # the console is away while PgBouncer restarts
                    pools = await asyncio.to_thread(self.bouncer.show, "POOLS")
                    for row in pools:
                        if row.get("database") == self.database:
                            active, waiting = int(row["cl_active"]), int(row["cl_waiting"])
                            self.max_clients = max(self.max_clients, active + waiting)
                            self.max_waiting = max(self.max_waiting, waiting)
            self.samples += 1
            await asyncio.sleep(0.1)


async def _approve_all(settings: Settings, stop: asyncio.Event) -> int:
    """Approve every pending task until `stop`, through the pooler; tolerates the pooler's restart."""
    approved = 0
    while not stop.is_set():
        try:
            async with client_for(settings) as client:
                while not stop.is_set():
                    for task in await client.list_tasks(status="pending"):
                        await client.decide(task.task_id, approve=True, by="pgbouncer-test")
                        approved += 1
                    await asyncio.sleep(0.2)
        except Exception:  # the pooler is restarting: reconnect
            await asyncio.sleep(0.5)
    return approved


async def _count(direct: asyncpg.Connection, status: str) -> int:
    return int(await direct.fetchval("SELECT count(*) FROM runs WHERE workflow = 'pooled' AND status = $1", status))


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(0.25)


async def test_workers_through_transaction_pgbouncer_complete_every_run_once(
    settings: Settings, database_url: str, pgbouncer: PgBouncer, worker_procs: WorkerProcs, http_sink: HttpSink,
) -> None:
    database = _db_name(database_url)
    pooled = pgbouncer.url(database)
    write_workflow(settings, "pooled.yaml", WORKFLOW)
    workers = []
    for i in range(2):  # 2 workers x AGENTRT_DB_POOL_SIZE 8 (+ telemetry, client, approver) over 4 server conns
        env = {**_pooled_env(pooled), "AGENTRT_DB_POOL_SIZE": "8", "AGENTRT_WORKER_ID": f"pgb-{i}",
               "AGENTRT_LOG_LEVEL": "INFO"}
        workers.append(worker_procs.start(extra_env=env, name=f"pgb{i}"))
    for i, proc in enumerate(workers):
        await asyncio.to_thread(proc.wait_for_log, f"worker pgb-{i} started", 120)
        # no direct liveness URL: fast death detection falls back to lease expiry, and says so
        assert "fast death detection is off" in proc.log_text()
    pooled_settings = replace(settings, database_url=pooled, database_pooler="transaction")
    direct = await asyncpg.connect(database_url)
    watch = Watch(direct, pgbouncer, database)
    watcher = asyncio.create_task(watch.run())
    stop = asyncio.Event()
    approver = asyncio.create_task(_approve_all(pooled_settings, stop))
    try:
        async with client_for(pooled_settings) as client:
            async def active() -> bool:
                return any(w.name == "pooled" and w.status == "active" for w in await client.list_workflows())

            await _until(active, 60, "workflow pooled active")
            ids = await client.start_runs(
                "pooled", [{"sink": http_sink.url, "customer": f"c{i % 5}"} for i in range(RUNS)])

        async def some_done() -> bool:
            return await _count(direct, "completed") >= RUNS // 4

        await _until(some_done, 180, f"{RUNS // 4} runs completed")
        # the pooler goes away mid-run: every client connection drops, in-flight transactions roll back
        watch.paused = True
        completed_at_restart = await _count(direct, "completed")
        t0 = time.monotonic()
        await asyncio.to_thread(pgbouncer.restart, 1.0)
        watch.paused = False

        async def all_done() -> bool:
            return await _count(direct, "completed") == RUNS

        await _until(all_done, 300, "every run completed")
        drained = time.monotonic() - t0
        stop.set()
        approved = await asyncio.wait_for(approver, 60)
        statuses = {r["status"]: r["n"] for r in await direct.fetch(
            "SELECT status, count(*) AS n FROM runs WHERE workflow = 'pooled' GROUP BY 1")}
        # decided in the database: a decision committed just as the pooler restarted may never have been
        # acknowledged to the approver (it then finds the task decided), so its own count can be one short
        approved_tasks = await direct.fetchval(
            """SELECT count(*) FROM human_tasks t JOIN runs r ON r.run_id = t.run_id
               WHERE r.workflow = 'pooled' AND t.status = 'approved' AND t.decided_by = 'pgbouncer-test'""")
        twice = await direct.fetchval(
            """SELECT count(*) FROM (SELECT run_id, step_id FROM events WHERE type = 'step.completed'
               GROUP BY 1, 2 HAVING count(*) > 1) d""")
        stats = await asyncio.to_thread(pgbouncer.show, "STATS")
    finally:
        stop.set()
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        if not approver.done():
            approver.cancel()
        await direct.close()

    requests = [r for r in http_sink.snapshot() if r.path.lstrip("/") in HTTP_STEPS]
    keys = [r.idempotency_key for r in requests]
    expected = {f"agentrt:{run_id}:{step}" for run_id in ids for step in HTTP_STEPS}
    distinct = {k for k in keys if k is not None}
    duplicated_effects = sum(1 for k in keys if k is None) + len(distinct - expected)
    lost = len(expected - distinct)
    repeats_same_key = len(keys) - len(distinct)
    xacts = sum(int(row.get("total_xact_count", 0)) for row in stats if row.get("database") == database)
    figures = {
        "runs": RUNS, "completed": statuses.get("completed", 0), "statuses": statuses,
        "completed_at_pgbouncer_restart": completed_at_restart, "drain_after_restart_s": round(drained, 1),
        "approvals": approved_tasks, "approvals_acknowledged": approved, "http_requests": len(requests),
        "distinct_effects": len(distinct),
        "expected_effects": len(expected), "duplicated_effects": duplicated_effects, "lost_effects": lost,
        "repeats_with_same_key": repeats_same_key, "steps_completed_twice": int(twice),
        "max_server_connections": watch.max_servers, "pool_size": pgbouncer.pool_size,
        "max_clients_on_pool": watch.max_clients, "max_clients_waiting": watch.max_waiting,
        "pgbouncer_transactions_since_restart": xacts, "samples": watch.samples,
    }
    print("\npgbouncer transaction mode:", json.dumps(figures))  # noqa: T201 - the figures, with -s
    assert statuses == {"completed": RUNS}, figures
    assert approved_tasks == RUNS and approved <= RUNS, figures
    assert duplicated_effects == 0 and lost == 0 and int(twice) == 0, figures
    # transactions really shared server connections: never more than the pool, more clients than that
    assert 0 < watch.max_servers <= pgbouncer.pool_size, figures
    assert watch.max_clients > pgbouncer.pool_size, figures
    assert all(w.alive() for w in workers)


async def _agentrt(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTRT_", "VAULT_", "BAO_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", *args, cwd=REPO_ROOT, env={**base, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), " ".join(err.decode().split())  # stderr unwrapped (rich folds lines)


async def test_migrate_and_doctor_through_transaction_pgbouncer_on_a_fresh_database(
    pg: PostgresService, pgbouncer: PgBouncer, tmp_path: Path,
) -> None:
    name = unique_name("pgb_fresh")
    pg.create_database(name)
    try:
        env = _pooled_env(pgbouncer.url(name))
        # three migrators at once, each through the pooler: every migration is applied exactly once, in order
        # (they may take turns: whoever waited for the lock finds the migration done and goes on to the next)
        results = await asyncio.gather(*(_agentrt(env, "migrate") for _ in range(3)))
        assert [rc for rc, _, _ in results] == [0, 0, 0], results
        counts = [int(err.split("applied ")[1].split(" ")[0]) for _, _, err in results]
        print("\nmigrations applied by each of 3 concurrent migrators through the pooler:", counts)  # noqa: T201
        assert sum(counts) == len(migration_files()), results
        direct = await asyncpg.connect(pg.url(name))
        try:
            applied = await direct.fetch("SELECT name FROM schema_migrations ORDER BY applied_at, name")
            assert [r["name"] for r in applied] == [n for n, _ in migration_files()]
            assert await direct.fetchval("SELECT to_regclass('runs') IS NOT NULL")
            # no advisory lock is left behind on a pooled server connection
            assert await direct.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
        finally:
            await direct.close()
        rc, _, err = await _agentrt(env, "migrate")
        assert rc == 0 and "applied 0 migration(s)" in err, err

        # doctor reports the pooler mode and the liveness caveat
        rc, out, err = await _agentrt({**env, "AGENTRT_WORKFLOWS_DIR": str(tmp_path)},
                                      "doctor", "--check", "postgres", "--json")
        check = json.loads(out)["checks"][0]
        assert check["facts"]["pooler"] == "transaction", out
        assert "through a transaction pooler" in check["summary"], out
        assert check["status"] == "warn" and any("fast death detection is off" in d for d in check["details"]), out

        # without the setting, the pooler's refusal names the fix; a bad value is a configuration error
        rc, _, err = await _agentrt({"AGENTRT_DATABASE_URL": pgbouncer.url(name)}, "migrate")
        assert rc != 0 and "AGENTRT_DATABASE_POOLER=transaction" in err, err
        rc, _, err = await _agentrt({**env, "AGENTRT_DATABASE_POOLER": "statement"}, "migrate")
        assert rc != 0 and "AGENTRT_DATABASE_POOLER='statement'" in err and "not supported" in err, err
    finally:
        pg.drop_database(name)


PRODUCTION = {"AGENTRT_LEASE_TTL": "15", "AGENTRT_HEARTBEAT_INTERVAL": "2", "AGENTRT_RECONCILE_INTERVAL": "2",
              "AGENTRT_REDELIVER_AFTER": "30"}


async def test_a_direct_liveness_url_keeps_fast_takeover_behind_the_pooler(
    settings: Settings, database_url: str, pgbouncer: PgBouncer, worker_procs: WorkerProcs, http_sink: HttpSink,
) -> None:
    """Everything through the pooler except each worker's one liveness connection
    (AGENTRT_LIVENESS_DATABASE_URL): a worker killed with -9 loses its runs in seconds, not after its 15 s lease;
    the others' death watch probes its lock through the pooler, in one transaction."""
    pooled = pgbouncer.url(_db_name(database_url))
    for i in range(1, 5):
        http_sink.set_delay(f"/step{i}", 2.0)  # 8 s a run: still running when the victim goes
    write_workflow(settings, "chain.yaml", http_chain(4))
    env = {**_pooled_env(pooled), **PRODUCTION, "AGENTRT_LIVENESS_DATABASE_URL": database_url,
           "AGENTRT_LOG_LEVEL": "INFO"}
    victim = worker_procs.start(extra_env={**env, "AGENTRT_WORKER_ID": "pgb-victim"}, name="victim")
    heir = worker_procs.start(extra_env={**env, "AGENTRT_WORKER_ID": "pgb-heir"}, name="heir")
    for proc in (victim, heir):
        await asyncio.to_thread(proc.wait_for_log, f"worker pgb-{proc.name} started", 120)
        assert "fast death detection is off" not in proc.log_text()
    await asyncio.sleep(4.5)  # the heir judges others once its own liveness lock is two heartbeats old
    pooled_settings = replace(settings, database_url=pooled, database_pooler="transaction")
    direct = await asyncpg.connect(database_url)
    try:
        async with client_for(pooled_settings) as client:
            async def active() -> bool:
                return any(w.name == "chain" and w.status == "active" for w in await client.list_workflows())

            await _until(active, 60, "workflow chain active")
            runs = await client.start_runs("chain", [{"sink": http_sink.url}] * 8)
            held: list[str] = []

            async def victim_holds() -> bool:
                held[:] = [r["run_id"] for r in await direct.fetch(
                    "SELECT run_id::text FROM runs WHERE lease_owner = 'pgb-victim' AND lease_expires > now()"
                    " AND status NOT IN ('completed', 'failed')")]
                return bool(held)

            await _until(victim_holds, 30, "the victim holds runs")
            await asyncio.sleep(1.0)  # a moment for more
            await victim_holds()
            victim.kill()
            killed = time.monotonic()

            async def moved() -> bool:
                n = await direct.fetchval(
                    "SELECT count(*) FROM runs WHERE run_id = ANY($1::uuid[]) AND lease_owner IS DISTINCT FROM "
                    "'pgb-victim'", held)
                return int(n) == len(held)

            await _until(moved, 14, "every run of the killed worker taken over")
            moved_in = time.monotonic() - killed
            finals = [await client.wait_for_run(r, timeout=120) for r in runs]
    finally:
        await direct.close()
    print(f"\nbehind the pooler, direct liveness URL: {len(held)} run(s) moved {moved_in:.1f}s after kill -9")  # noqa: T201
    assert moved_in < 8.0, moved_in  # the lease alone: 15 s plus a reconcile pass
    assert all(f.status.value == "completed" for f in finals), [f.error for f in finals]
    assert http_sink.duplicate_requests() <= len(held)  # only calls in flight at the kill, with the same key
