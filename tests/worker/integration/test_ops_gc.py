"""`agentrt gc`: which runs go and which stay, with ages set directly in the test database. Every case runs twice:
on runs from before partitioning (the legacy partition of `events`, deleted row by row) and on runs in daily
partitions (their day dropped whole, its survivors moved to today's partition; worker/history/)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.support.services import REPO_ROOT, worker_environment
from worker.config import Settings
from worker.ops.gc import collect, parse_age
from worker.store.pool import create_pool

NOW = datetime.now(tz=UTC)
OLD = NOW - timedelta(days=45)
RECENT = NOW - timedelta(days=3)


_MODE: dict[int, str] = {}
"""The history mode of each test's pool (by id): where its runs keep their events."""


def _mode(pool: asyncpg.Pool) -> str:
    return _MODE[id(pool)]


@pytest.fixture(params=["legacy", "partitioned"])
def history(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def pool(settings: Settings, history: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(settings.database_url)
    _MODE[id(p)] = history
    await p.execute("INSERT INTO definitions (def_hash, name, spec, source) VALUES ('h1', 'wf', '{}', '')")
    try:
        yield p
    finally:
        _MODE.pop(id(p), None)
        await p.close()


async def _history_at(pool: asyncpg.Pool, created: datetime) -> datetime | str:
    """Where a run created at `created` keeps its events: the legacy partition, or that day's partition."""
    if _mode(pool) == "legacy":
        return "-infinity"
    await pool.execute("SELECT agentrt_history_partition('events', $1)", created)
    return created


async def _run(pool: asyncpg.Pool, name: str, status: str, *, created: datetime, finished: datetime | None = None,
               parent: str | None = None) -> str:
    """A run with two events, a human task and a journal entry, so cascades can be counted."""
    run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    at = await _history_at(pool, created)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO runs (run_id, workflow, def_hash, status, created_at, updated_at, finished_at,
                                 parent_run_id, requested_by, history_at)
               VALUES ($1, 'wf', 'h1', $2, $3::timestamptz, coalesce($4::timestamptz, $3::timestamptz), $4, $5, $6,
                       $7::text::timestamptz)""",
            run_id, status, created, finished, parent, name, str(at))
        await conn.execute(
            """INSERT INTO events (run_id, seq, ts, type, history_at)
               VALUES ($1, 1, $2, 'run.created', $3::text::timestamptz), ($1, 2, $2, 'x', $3::text::timestamptz)""",
            run_id, created, str(at))
        await conn.execute(
            "INSERT INTO human_tasks (task_id, run_id, step_id, kind, prompt, status) "
            "VALUES ($1, $2, 's', 'approval', 'ok?', 'approved')", str(uuid.uuid4()), run_id)
        await conn.execute(
            "INSERT INTO step_journal (run_id, step_id, call_index, data) VALUES ($1, 's', 0, '{}')", run_id)
    return run_id


async def _names(pool: asyncpg.Pool) -> set[str]:
    return {r["requested_by"] for r in await pool.fetch("SELECT requested_by FROM runs")}


async def _populate(pool: asyncpg.Pool) -> None:
    d = timedelta(days=1)
    # top-level runs
    await _run(pool, "old-completed", "completed", created=OLD, finished=OLD + d)
    await _run(pool, "old-failed", "failed", created=OLD - d, finished=OLD)
    await _run(pool, "old-cancelled", "cancelled", created=OLD, finished=OLD)
    await _run(pool, "old-but-finished-recently", "completed", created=OLD, finished=RECENT)
    await _run(pool, "recent-completed", "completed", created=RECENT, finished=RECENT)
    await _run(pool, "old-running", "running", created=OLD)
    await _run(pool, "old-waiting", "waiting", created=OLD)
    await _run(pool, "old-pending", "pending", created=OLD)
    # a finished tree, three levels deep: goes as a whole
    p = await _run(pool, "tree-parent", "completed", created=OLD, finished=OLD + d)
    c = await _run(pool, "tree-child", "completed", created=OLD, finished=OLD, parent=p)
    await _run(pool, "tree-grandchild", "failed", created=OLD, finished=OLD, parent=c)
    # old finished parent whose child is still active: both stay
    p = await _run(pool, "parent-of-active", "failed", created=OLD, finished=OLD)
    await _run(pool, "active-child", "running", created=OLD, parent=p)
    # old finished child whose parent is still active: both stay
    p = await _run(pool, "active-parent", "waiting", created=OLD)
    await _run(pool, "child-of-active", "completed", created=OLD, finished=OLD, parent=p)
    # old finished parent whose child finished after the cutoff: both stay
    p = await _run(pool, "parent-of-recent", "completed", created=OLD, finished=OLD)
    await _run(pool, "recent-child", "completed", created=OLD, finished=RECENT, parent=p)
    # old grandparent chain with an active grandchild: all stay
    p = await _run(pool, "gp", "completed", created=OLD, finished=OLD)
    c = await _run(pool, "gp-child", "completed", created=OLD, finished=OLD, parent=p)
    await _run(pool, "gp-active-grandchild", "waiting", created=OLD, parent=c)


DELETED = {"old-completed", "old-failed", "old-cancelled", "tree-parent", "tree-child", "tree-grandchild"}
KEPT = {"old-but-finished-recently", "recent-completed", "old-running", "old-waiting", "old-pending",
        "parent-of-active", "active-child", "active-parent", "child-of-active", "parent-of-recent", "recent-child",
        "gp", "gp-child", "gp-active-grandchild"}


async def test_gc_deletes_exactly_the_old_finished_trees(pool: asyncpg.Pool) -> None:
    await _populate(pool)
    batches: list[int] = []
    summary = await collect(pool, timedelta(days=30), batch_size=2, progress=lambda s: batches.append(s.runs))
    assert await _names(pool) == KEPT
    assert summary.runs == len(DELETED) and summary.trees == 4
    assert summary.events == 2 * len(DELETED) and summary.tasks == len(DELETED) and summary.journal == len(DELETED)
    assert summary.kept_trees == 3  # parent-of-active, parent-of-recent, gp (their old finished roots)
    assert batches == sorted(batches)  # progress after every batch (the row path's batches of 2 runs)
    assert summary.batches >= 4 if _mode(pool) == "legacy" else summary.partitions
    # the cascade took every dependent row of the deleted runs, and nothing else
    for table, per_run in (("events", 2), ("human_tasks", 1), ("step_journal", 1)):
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") == per_run * len(KEPT), table
    if _mode(pool) == "partitioned":
        # the old days are gone as tables; their survivors (and all their events) live in today's partition now
        old_days = {f"events_p{d:%Y%m%d}" for d in (OLD - timedelta(days=1), OLD, OLD + timedelta(days=1))}
        assert set(summary.partitions) == {f"events_p{OLD - timedelta(days=1):%Y%m%d}", f"events_p{OLD:%Y%m%d}"}
        assert not any([await pool.fetchval("SELECT to_regclass($1)", d) for d in old_days])
        today = await pool.fetchval("SELECT date_trunc('day', now(), 'UTC')")
        moved = {r["requested_by"] for r in await pool.fetch("SELECT requested_by FROM runs WHERE history_at = $1",
                                                               today)}
        assert moved == KEPT - {"recent-completed"} and summary.moved == len(moved)
        assert await pool.fetchval(
            "SELECT count(*) FROM events e JOIN runs r ON r.run_id = e.run_id AND r.history_at = e.history_at"
        ) == 2 * len(KEPT)
    again = await collect(pool, timedelta(days=30))
    assert again.runs == 0 and await _names(pool) == KEPT


async def test_dry_run_counts_and_deletes_nothing_then_cli_deletes(settings: Settings, pool: asyncpg.Pool) -> None:
    await _populate(pool)
    await pool.execute("INSERT INTO workflow_events (path, kind, at) VALUES ('a.yaml', 'loaded', $1), "
                       "('a.yaml', 'loaded', $2)", OLD, RECENT)
    await pool.execute("INSERT INTO external_events (event_id, name, data, sent_by, received_at) VALUES "
                       "(gen_random_uuid(), 'old', '{}', 'x', $1), (gen_random_uuid(), 'new', '{}', 'x', $2)",
                       OLD, RECENT)
    env = worker_environment(settings)

    def gc(*args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
        proc = subprocess.run([sys.executable, "-m", "worker", "gc", *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, timeout=60, check=False)
        out = proc.stdout.decode()
        return proc.returncode, json.loads(out) if "--json" in args else {}, out + proc.stderr.decode()

    code, report, _ = await asyncio.to_thread(gc, "--older-than", "30d", "--dry-run", "--json")
    assert code == 0
    assert report["dry_run"] is True and report["runs"] == len(DELETED) and report["events"] == 2 * len(DELETED)
    assert report["workflow_events"] == 1 and report["external_events"] == 1
    assert await _names(pool) == DELETED | KEPT
    code, _, text = await asyncio.to_thread(gc, "--older-than", "30d", "--batch-size", "3")
    assert code == 0
    assert f"deleted {len(DELETED)} run(s)" in text and "kept 3 old finished" in text
    if _mode(pool) == "legacy":
        assert "batch 1:" in text
    else:
        assert "2 day(s) of run history: deleted 6 run(s)" in text and "dropped 2 day(s) of run history whole" in text
    assert await _names(pool) == KEPT
    assert await pool.fetchval("SELECT count(*) FROM workflow_events") == 1
    assert await pool.fetchval("SELECT name FROM external_events") == "new"
    code, _, text = await asyncio.to_thread(gc, "--older-than", "5s")
    assert code == 2 and "under a minute" in text


async def test_a_shorter_cutoff_takes_recent_runs_too(pool: asyncpg.Pool) -> None:
    await _populate(pool)
    await collect(pool, timedelta(days=1))
    assert await _names(pool) == {"old-running", "old-waiting", "old-pending", "parent-of-active", "active-child",
                                  "active-parent", "child-of-active", "gp", "gp-child", "gp-active-grandchild"}


def test_parse_age() -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age("2w") == timedelta(days=14)
    assert parse_age("12h") == timedelta(hours=12)
    for bad in ("5s", "0d", "soon", "-1d"):
        with pytest.raises(ValueError):
            parse_age(bad)
