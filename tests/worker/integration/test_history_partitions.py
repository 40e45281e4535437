"""Partitioned history (migrations 0016-0018, worker/history/): the migration on a populated database, runs from
before it that keep going, a run still waiting when its day is dropped, and telemetry days dropped whole."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.support.runtime import client_for, pending_task, running_worker, wait_status, write_workflow
from worker.config import Settings
from worker.history.partitions import list_partitions
from worker.history.retention import prune_telemetry
from worker.ops.gc import collect
from worker.store.migrate import migrate_conn, migration_files
from worker.store.pool import create_pool

GATE = """
name: gate
steps:
  - {id: before, uses: set, with: {n: 1}}
  - {id: ask, uses: approval, with: {prompt: "go on?"}}
  - {id: after, uses: set, with: {n: 2}}
"""


@pytest.fixture
async def fresh_db(database_url: str) -> AsyncIterator[str]:
    """An empty database on the test server (no migration applied), dropped afterwards."""
    name = f"h_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_migration_on_a_populated_database_keeps_every_row_and_partitions_by_day(fresh_db: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        # the schema as it was before partitioning, with history in it
        await conn.execute("CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL "
                           "DEFAULT now())")
        for name, sql in migration_files():
            if name >= "0016":
                break
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        await conn.execute("INSERT INTO definitions (def_hash, name, spec, source) VALUES ('h', 'wf', '{}', '')")
        await conn.execute("""INSERT INTO runs (run_id, workflow, def_hash, status, created_at)
                              SELECT gen_random_uuid(), 'wf', 'h', 'completed', now() - g * interval '1 hour'
                              FROM generate_series(1, 500) g""")
        await conn.execute("""INSERT INTO events (run_id, seq, ts, type)
                              SELECT run_id, g, created_at, 'x' FROM runs, generate_series(1, 12) g""")
        await conn.execute("""INSERT INTO spans (run_id, span_id, trace_id, name, start_ts, end_ts, created_at)
                              SELECT run_id, 's' || g, 't', 'n', created_at, created_at, created_at
                              FROM runs, generate_series(1, 3) g""")
        await conn.execute("""INSERT INTO step_logs (run_id, step_id, ts, level, message)
                              SELECT run_id, 's', created_at, 'info', 'line' FROM runs, generate_series(1, 2)""")
        before = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in ("events", "spans", "step_logs")}
        last_log_id = await conn.fetchval("SELECT max(id) FROM step_logs")

        applied = await migrate_conn(conn)

        assert applied == ["0016_history_prepare.sql", "0017_history_validate.sql", "0018_history_partitions.sql"]
        after = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in ("events", "spans", "step_logs")}
        assert after == before == {"events": 6000, "spans": 1500, "step_logs": 1000}
        for table in ("events", "spans", "step_logs"):
            parts = await list_partitions(conn, table)
            assert parts[0].legacy and parts[0].name == f"{table}_legacy"
            # every old row stayed where it was: in the legacy partition, which is the old table renamed
            assert await conn.fetchval(f"SELECT count(*) FROM {table}_legacy") == before[table]
            days = [p for p in parts if not p.legacy]
            assert len(days) >= 6 and all(p.hi - p.lo == timedelta(days=1) for p in days if p.lo is not None)
        today = await conn.fetchval("SELECT date_trunc('day', now(), 'UTC')")
        assert await conn.fetchval("SELECT to_regclass($1)", f"events_p{today:%Y%m%d}") is not None
        # old runs point at the legacy partition; a new run gets today's
        assert await conn.fetchval("SELECT count(*) FROM runs WHERE history_at = '-infinity'") == 500
        rid = await conn.fetchval("INSERT INTO runs (run_id, workflow, def_hash) VALUES (gen_random_uuid(), 'wf', "
                                  "'h') RETURNING run_id")
        await conn.execute("INSERT INTO events (run_id, seq, ts, type, history_at) "
                           "SELECT run_id, 1, now(), 'x', history_at FROM runs WHERE run_id = $1", rid)
        assert await conn.fetchval("SELECT tableoid::regclass::text FROM events WHERE run_id = $1", rid) \
            == f"events_p{today:%Y%m%d}"
        # step log ids go on from the old sequence (it now belongs to the partitioned table)
        await conn.execute("INSERT INTO step_logs (run_id, step_id, ts, level, message) VALUES ($1, 's', now(), "
                           "'info', 'new')", rid)
        assert await conn.fetchval("SELECT max(id) FROM step_logs") == last_log_id + 1
        # unique per run and seq still holds, in the legacy partition and in a day's
        old = await conn.fetchval("SELECT run_id FROM events_legacy LIMIT 1")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO events (run_id, seq, ts, type, history_at) "
                               "VALUES ($1, 1, now(), 'x', '-infinity')", old)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO events (run_id, seq, ts, type, history_at) "
                               "SELECT run_id, 1, now(), 'x', history_at FROM runs WHERE run_id = $1", rid)
        assert await migrate_conn(conn) == []  # applied once
    finally:
        await conn.close()


async def _park_history(pool: asyncpg.Pool, run_id: str, at: str | datetime) -> None:
    """Move a run's history (its row's history_at and its events) as if it had begun at `at`."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE runs SET history_at = $2::text::timestamptz WHERE run_id = $1", run_id, str(at))
        await conn.execute("UPDATE events SET history_at = $2::text::timestamptz WHERE run_id = $1", run_id, str(at))


async def _where(pool: asyncpg.Pool, run_id: str) -> set[str]:
    rows = await pool.fetch("SELECT DISTINCT tableoid::regclass::text AS t FROM events WHERE run_id = $1", run_id)
    return {r["t"] for r in rows}


async def test_a_run_from_before_partitioning_goes_on_in_the_legacy_partition(settings: Settings) -> None:
    write_workflow(settings, "gate.yaml", GATE)
    pool = await create_pool(settings.database_url)
    try:
        async with running_worker(settings), client_for(settings) as client:
            run_id = (await client.start("gate", {})).run_id
            await pending_task(client, run_id)
        await _park_history(pool, run_id, "-infinity")  # what migration 0016 gives a run that existed then
        assert await _where(pool, run_id) == {"events_legacy"}
        async with running_worker(settings), client_for(settings) as client:
            task = await pending_task(client, run_id)
            await client.decide(task.task_id, approve=True, by="test")
            await wait_status(client, run_id, "completed", timeout=60)
            seqs = [e.seq for e in (await client.events_after(run_id))[1]]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 6  # one log, no gap, no repeat
        assert await _where(pool, run_id) == {"events_legacy"}
        # gc's row path takes it (and its events, by the legacy partition's foreign key)
        await pool.execute("UPDATE runs SET created_at = now() - interval '41 days', "
                           "finished_at = now() - interval '40 days' WHERE run_id = $1", run_id)
        summary = await collect(pool, timedelta(days=30))
        assert summary.runs == 1 and summary.events == len(seqs) and not summary.partitions
        assert await pool.fetchval("SELECT count(*) FROM events WHERE run_id = $1", run_id) == 0
    finally:
        await pool.close()


async def test_a_run_still_waiting_when_its_day_is_dropped_moves_to_today_and_finishes(settings: Settings) -> None:
    write_workflow(settings, "gate.yaml", GATE)
    pool = await create_pool(settings.database_url)
    old_day = datetime.now(tz=UTC) - timedelta(days=40)
    try:
        async with running_worker(settings), client_for(settings) as client:
            waiting = (await client.start("gate", {})).run_id
            done = (await client.start("gate", {})).run_id
            await pending_task(client, waiting)
            task = await pending_task(client, done)
            await client.decide(task.task_id, approve=True, by="test")
            await wait_status(client, done, "completed", timeout=60)
        await pool.execute("SELECT agentrt_history_partition('events', $1)", old_day)
        for run_id in (waiting, done):
            await _park_history(pool, run_id, old_day)
        await pool.execute("UPDATE runs SET finished_at = $2 WHERE run_id = $1", done, old_day)
        part = f"events_p{old_day:%Y%m%d}"
        assert await _where(pool, waiting) == await _where(pool, done) == {part}
        events_before = await pool.fetchval("SELECT count(*) FROM events WHERE run_id = $1", waiting)

        dry = await collect(pool, timedelta(days=30), dry_run=True)
        assert dry.partitions == [part] and dry.runs == 1 and dry.moved == 1
        assert await pool.fetchval("SELECT to_regclass($1)", part) is not None  # a dry run changes nothing

        summary = await collect(pool, timedelta(days=30))
        assert summary.partitions == [part] and summary.runs == 1 and summary.moved == 1
        assert await pool.fetchval("SELECT to_regclass($1)", part) is None  # dropped whole
        assert await pool.fetchval("SELECT count(*) FROM runs WHERE run_id = $1", done) == 0
        today = await pool.fetchval("SELECT date_trunc('day', now(), 'UTC')")
        assert await _where(pool, waiting) == {f"events_p{today:%Y%m%d}"}
        assert await pool.fetchval("SELECT count(*) FROM events WHERE run_id = $1", waiting) == events_before

        async with running_worker(settings), client_for(settings) as client:  # the moved run goes on
            task = await pending_task(client, waiting)
            await client.decide(task.task_id, approve=True, by="test")
            await wait_status(client, waiting, "completed", timeout=60)
            seqs = [e.seq for e in (await client.events_after(waiting))[1]]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > events_before
    finally:
        await pool.close()


async def test_telemetry_days_past_retention_are_dropped_whole(settings: Settings) -> None:
    pool = await create_pool(settings.database_url)
    try:
        run_id = str(uuid.uuid4())
        now = await pool.fetchval("SELECT now()")
        legacy_until = await pool.fetchval("SELECT legacy_until FROM history_partitioning")
        day3 = legacy_until + timedelta(hours=12)  # inside the first daily partition after the legacy one
        await pool.execute("""INSERT INTO spans (run_id, span_id, trace_id, name, start_ts, end_ts, created_at)
                              VALUES ($1, 'a', 't', 'n', $2, $2, $2), ($1, 'b', 't', 'n', $3, $3, $3)""",
                           run_id, now, day3)
        await pool.execute("""INSERT INTO step_logs (run_id, step_id, ts, level, message)
                              VALUES ($1, 's', $2, 'info', 'old'), ($1, 's', $3, 'info', 'new')""",
                           run_id, now, day3)
        # a week on: everything up to the legacy partition's end is past a 6-day retention, day3 is not
        later = legacy_until + timedelta(days=6, hours=1)
        done = await prune_telemetry(pool, span_retention_s=6 * 86400, log_retention_s=6 * 86400, now=later)
        assert {"spans_legacy", "step_logs_legacy"} <= set(done.dropped)
        assert [r["span_id"] for r in await pool.fetch("SELECT span_id FROM spans WHERE run_id = $1", run_id)] \
            == ["b"]
        assert [r["message"] for r in await pool.fetch("SELECT message FROM step_logs WHERE run_id = $1", run_id)] \
            == ["new"]
        names = {p.name for p in await list_partitions(pool, "spans")}
        assert "spans_legacy" not in names and f"spans_p{day3:%Y%m%d}" in names
    finally:
        await pool.close()


async def test_a_detach_held_up_by_an_old_transaction_is_finished_by_the_next_gc(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.history import retention

    monkeypatch.setattr(retention, "DETACH_WAIT", 2.0)
    write_workflow(settings, "gate.yaml", GATE)
    pool = await create_pool(settings.database_url)
    old_day = datetime.now(tz=UTC) - timedelta(days=50)
    blocker = await asyncpg.connect(settings.database_url)
    try:
        async with running_worker(settings), client_for(settings) as client:
            run_id = (await client.start("gate", {})).run_id
            task = await pending_task(client, run_id)
            await client.decide(task.task_id, approve=True, by="test")
            await wait_status(client, run_id, "completed", timeout=60)
        await pool.execute("SELECT agentrt_history_partition('events', $1)", old_day)
        await _park_history(pool, run_id, old_day)
        await pool.execute("UPDATE runs SET finished_at = $2 WHERE run_id = $1", run_id, old_day)
        part = f"events_p{old_day:%Y%m%d}"
        # a session idle in a transaction that read `events` before the detach: DETACH CONCURRENTLY waits for it
        await blocker.execute("BEGIN; SELECT count(*) FROM events WHERE run_id = '00000000-0000-0000-0000-0000000"
                              "00000'")

        held = await collect(pool, timedelta(days=30))
        assert held.runs == 1 and held.pending == [part] and part not in held.partitions
        assert await pool.fetchval("SELECT count(*) FROM runs WHERE run_id = $1", run_id) == 0  # its runs went
        assert [p.name for p in await list_partitions(pool, "events") if p.detach_pending] == [part]
        # the worker and new runs are not held up by it
        async with running_worker(settings), client_for(settings) as client:
            other = (await client.start("gate", {})).run_id
            await pending_task(client, other)

        await blocker.execute("COMMIT")
        done = await collect(pool, timedelta(days=30))
        assert done.partitions == [part] and done.pending == []
        assert await pool.fetchval("SELECT to_regclass($1)", part) is None
    finally:
        await blocker.close()
        await pool.close()
