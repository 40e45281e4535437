"""Queries that stay fast at scale (issue 21, bench/scale.py): migration 0015 on a populated database, the
status counts' estimates, the bounded text filters, and the indexes the run listings are planned with."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.support.services import unique_name
from worker.client import RuntimeClient
from worker.client import runs as client_runs
from worker.config import Settings
from worker.search import filters as search_filters
from worker.search.filters import RunFilter
from worker.store.migrate import migrate, migration_files

NEW = "0015_scale_queries.sql"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


async def _seed(conn: asyncpg.Connection,
                rows: Sequence[tuple[str, str, int, str | None, str | None]]) -> list[str]:
    """Runs (workflow, status, minutes after T0, error, waiting_on); returns their ids in that order."""
    await conn.execute("""INSERT INTO definitions (def_hash, name, spec, source) VALUES ('d', 'w', '{"steps": []}', '')
                          ON CONFLICT DO NOTHING""")
    ids = [str(uuid.uuid4()) for _ in rows]
    await conn.executemany(
        """INSERT INTO runs (run_id, workflow, def_hash, status, created_at, updated_at, error, waiting_on,
                             current_step)
           VALUES ($1, $2, 'd', $3, $4, $4, $5, $6, 'step1')""",
        [(rid, wf, status, T0 + timedelta(minutes=m), err, waiting)
         for rid, (wf, status, m, err, waiting) in zip(ids, rows, strict=True)])
    return ids


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[RuntimeClient]:
    c = await RuntimeClient.connect(settings)
    try:
        yield c
    finally:
        await c.close()


class _Capture:
    """The client's pool, remembering the statements `fetch` ran (to EXPLAIN the real SQL)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.seen: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.seen.append((sql, args))
        return await self.pool.fetch(sql, *args)


async def _plan(client: RuntimeClient, call: Any) -> str:
    """The plan of the listing `call` runs, with sequential scans off: which index can serve it."""
    capture = _Capture(client.reader)  # listings read through the reader (the primary without a read replica)
    client.reader = capture  # type: ignore[assignment]
    try:
        await call()
    finally:
        client.reader = capture.pool
    sql, args = capture.seen[-1]
    async with client.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        return "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))


# -- migration 0015 ------------------------------------------------------------------------------------------
async def test_migration_0015_applies_on_a_database_with_runs(pg: Any) -> None:
    name = unique_name("m15")
    pg.create_database(name)
    try:
        conn = await asyncpg.connect(pg.url(name))
        try:
            await conn.execute("CREATE TABLE schema_migrations (name text PRIMARY KEY, "
                               "applied_at timestamptz NOT NULL DEFAULT now())")
            for file, sql in migration_files():
                if file < NEW:  # the schema as it was before 0015
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", file)
            await _seed(conn, [(f"wf{i % 3}", ("failed", "completed", "waiting")[i % 3], i, "boom", None)
                               for i in range(300)])
            assert await migrate(pg.url(name)) == [f for f, _ in migration_files() if f >= NEW]  # 0015 and later
            index = await conn.fetchrow(
                """SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) AS def FROM pg_index i
                   WHERE i.indexrelid = 'runs_failed_workflow_idx'::regclass""")
            assert index["indisvalid"]
            assert "WHERE (status = 'failed'::text)" in index["def"]
            async with conn.transaction():
                await conn.execute("SET LOCAL enable_seqscan = off")
                plan = "\n".join(r[0] for r in await conn.fetch(
                    """EXPLAIN SELECT run_id FROM runs WHERE status = 'failed' AND workflow = 'wf0'
                       ORDER BY created_at DESC LIMIT 50"""))
            assert "runs_failed_workflow_idx" in plan
            assert await migrate(pg.url(name)) == []  # once
        finally:
            await conn.close()
    finally:
        pg.drop_database(name)


# -- counts: exact up to COUNT_EXACT_UPTO, then estimated and said so -----------------------------------------
async def test_counts_are_exact_for_a_few_runs(client: RuntimeClient) -> None:
    async with client.pool.acquire() as conn:
        await _seed(conn, [("w", "completed", i, None, None) for i in range(40)]
                    + [("w", "failed", 50 + i, "boom", None) for i in range(5)]
                    + [("w", "waiting", 60, None, "retry 2/3")])
    counts = await client.count_runs()
    assert counts == {"completed": 40, "failed": 5, "waiting": 1}
    assert counts.estimated == frozenset()


async def test_counts_over_the_limit_are_estimates_and_named(client: RuntimeClient,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    async with client.pool.acquire() as conn:
        await _seed(conn, [("w", "completed", i, None, None) for i in range(200)]
                    + [("w", "failed", 300 + i, "boom", None) for i in range(5)]
                    + [("w", "running", 400, None, None)])
        monkeypatch.setattr(client_runs, "COUNT_EXACT_UPTO", 50)
        before_analyze = await client.count_runs()  # no statistics yet: at least the limit, and said so
        assert before_analyze["completed"] >= 50 and before_analyze.estimated == {"completed"}
        await conn.execute("ANALYZE runs")
    counts = await client.count_runs()
    assert counts.estimated == {"completed"}
    assert counts["completed"] == 200  # ANALYZE read every row of so small a table: the estimate is exact
    assert counts["failed"] == 5 and counts["running"] == 1  # under the limit: counted
    assert isinstance(counts, dict)  # callers that only read numbers are unchanged


def test_the_status_tabs_mark_estimated_counts() -> None:
    from console.filtering import RETRYING
    from console.screens.run_rows import status_tabs

    counts = client_runs.RunCounts({"completed": 980_000, "failed": 61_000, "running": 12},
                                   estimated=frozenset({"completed", "failed"}))
    labels = {name: label for name, label, _ in status_tabs(counts, 0, RETRYING, 400)}
    assert labels["completed"].strip() == "completed ~980000"
    assert labels["running"].strip() == "running 12"
    assert labels["all"].strip().startswith("all ~")
    exact = {name: label for name, label, _ in status_tabs({"completed": 3}, 0, RETRYING, 400)}
    assert "~" not in "".join(exact.values())


# -- bounded text filters ----------------------------------------------------------------------------------------
async def test_search_step_and_error_look_at_the_newest_runs_only(client: RuntimeClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    async with client.pool.acquire() as conn:
        ids = await _seed(conn, [("w", "failed", i, f"boom {i}", None) for i in range(30)]
                          + [("other", "completed", 100 + i, None, None) for i in range(10)])
    monkeypatch.setattr(search_filters, "SCAN_LIMIT", 15)
    # the newest 15 runs are the 10 completed ones of `other` and 5 failed ones
    found = await client.list_runs(limit=100, search="boom")
    assert {r.run_id for r in found} == set(ids[25:30])
    assert {r.run_id for r in await client.list_runs(limit=100, filters=RunFilter(error="BOOM"))} == set(ids[25:30])
    # narrowed by an indexed part first: the bound counts the failed runs only
    found = await client.list_runs(limit=100, status="failed", search="boom")
    assert {r.run_id for r in found} == set(ids[15:30])
    # the oldest order looks at the oldest runs
    oldest = await client.list_runs(limit=100, search="boom", order="oldest")
    assert [r.run_id for r in oldest] == ids[:15]
    # a page further back searches further back
    page = await client.list_runs(limit=100, search="boom", before=T0 + timedelta(minutes=25))
    assert {r.run_id for r in page} == set(ids[10:25])
    # an id prefix finds its run however old (through the primary key), still through the other filters
    assert [r.run_id for r in await client.list_runs(limit=100, search=ids[0][:8])] == [ids[0]]
    assert [r.run_id for r in await client.list_runs(limit=100, search=ids[0][:13].upper())] == [ids[0]]
    assert await client.list_runs(limit=100, search=ids[0][:8], workflow="other") == []
    assert await client.list_runs(limit=100, search=ids[0][:8], filters=RunFilter(error="nope")) == []
    # nothing bounded without a text filter
    assert len(await client.list_runs(limit=100, status="failed")) == 30
    # longest: among the newest runs
    assert len(await client.list_runs(limit=100, order="longest")) == 15


async def test_waiting_filters_look_at_every_live_run_however_old(client: RuntimeClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    async with client.pool.acquire() as conn:
        ids = await _seed(conn, [("w", "waiting", 0, None, "sleep")]
                          + [("w", "completed", 10 + i, None, None) for i in range(30)])
    monkeypatch.setattr(search_filters, "SCAN_LIMIT", 5)
    assert [r.run_id for r in await client.list_runs(limit=100, filters=RunFilter(waiting="sleep"))] == ids[:1]
    plan = await _plan(client, lambda: client.list_runs(limit=100, filters=RunFilter(waiting="sleep")))
    assert "runs_status_created_idx" in plan, plan


async def test_listings_are_planned_with_their_indexes(client: RuntimeClient) -> None:
    async with client.pool.acquire() as conn:
        await _seed(conn, [(f"w{i % 10}", "failed" if i % 20 == 3 else "completed", i, None, None)
                           for i in range(1000)])
        await conn.execute("ANALYZE runs")
    cases = [
        (lambda: client.list_runs(limit=500), "runs_created_idx"),
        (lambda: client.list_runs(limit=500, status="failed"), "runs_status_created_idx"),
        (lambda: client.list_runs(limit=500, workflow="w1"), "runs_workflow_created_idx"),
        (lambda: client.list_runs(limit=500, filters=RunFilter(workflow="w1", status="failed")),
         "runs_failed_workflow_idx"),
        (lambda: client.list_runs(limit=500, search="nothing"), "runs_created_idx"),
    ]
    for call, index in cases:
        plan = await _plan(client, call)
        assert index in plan, plan
        assert "Seq Scan on runs" not in plan, plan


async def test_a_run_id_prefix_is_resolved_through_the_primary_key(client: RuntimeClient) -> None:
    """`agentrt show 5b0c3c38`: a range of the primary key, not LIKE over every id as text."""
    from worker.errors import NotFound

    first = "abcd1234-0000-4000-8000-000000000001"
    second = "abcd1234-0000-4000-8000-000000000002"
    async with client.pool.acquire() as conn:
        (one, two, three) = await _seed(conn, [("w", "completed", 1, None, None)] * 3)
        await conn.execute("UPDATE runs SET run_id = $2 WHERE run_id = $1", uuid.UUID(two), uuid.UUID(first))
        await conn.execute("UPDATE runs SET run_id = $2 WHERE run_id = $1", uuid.UUID(three), uuid.UUID(second))
        bounds = search_filters.id_range("abcd1234")
        assert bounds is not None
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN SELECT run_id::text FROM runs WHERE run_id BETWEEN $1 AND $2 ORDER BY run_id LIMIT 2", *bounds))
    assert "runs_pkey" in plan
    assert await client.resolve_run_id(one[:8]) == one
    assert await client.resolve_run_id(one[:13].upper()) == one  # with its dash, in capitals
    assert await client.resolve_run_id(second[:-1] + "2") == second
    assert await client.resolve_run_id(one.replace("-", "")[:31]) == one  # 31 of its 32 digits, undashed
    with pytest.raises(NotFound, match="ambiguous"):
        await client.resolve_run_id("abcd1234")
    with pytest.raises(NotFound, match="ambiguous"):
        await client.resolve_run_id("abcd1234-0000-4000-8000-00000000000")
    for bad in ("abc", "not-a-run", "zzzz1234"):
        with pytest.raises(NotFound, match="no run"):
            await client.resolve_run_id(bad)
