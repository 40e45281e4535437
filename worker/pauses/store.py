"""SQL of pausing: each function runs inside the caller's transaction (the one that appends the audit record).

Runs are told by bumping their `signal_version` (a worker that holds one then re-reads its signals; one parked
is picked up by the reconciler even if the Redis nudge is lost).
"""

from __future__ import annotations

from typing import Any

import asyncpg

ACTIVE = "('queued', 'pending', 'running', 'waiting', 'paused')"
"""Statuses of unfinished runs."""


async def pause_run_txn(conn: asyncpg.Connection, run_id: str, by: str, reason: str | None,
                        now: bool) -> asyncpg.Record | None:
    """Mark an unfinished run paused; None when it is finished or already paused (its row tells which)."""
    return await conn.fetchrow(
        f"""UPDATE runs SET paused_by = $2, paused_at = now(), pause_reason = $3, pause_now = $4,
                   signal_version = signal_version + 1, updated_at = now()
            WHERE run_id = $1 AND status IN {ACTIVE} AND paused_by IS NULL
            RETURNING run_id::text, workflow, status, current_step""",
        run_id, by, reason, now)


async def resume_run_txn(conn: asyncpg.Connection, run_id: str) -> asyncpg.Record | None:
    """Lift a run's own pause; None when it has none. Returns what it was (for the audit record)."""
    return await conn.fetchrow(
        f"""UPDATE runs r SET paused_by = NULL, paused_at = NULL, pause_reason = NULL, pause_now = false,
                   signal_version = r.signal_version + 1, updated_at = now()
            FROM (SELECT run_id, paused_by, paused_at, pause_reason FROM runs WHERE run_id = $1 FOR UPDATE) old
            WHERE r.run_id = old.run_id AND old.paused_by IS NOT NULL AND r.status IN {ACTIVE}
            RETURNING r.run_id::text, r.workflow, r.status, old.paused_by, old.paused_at, old.pause_reason""",
        run_id)


async def workflow_pause(conn: asyncpg.Connection | asyncpg.Pool, workflow: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT workflow, paused_by, paused_at, reason, pause_now FROM workflow_pauses WHERE workflow = $1", workflow)


async def pause_workflow_txn(conn: asyncpg.Connection, workflow: str, by: str, reason: str | None,
                             now: bool) -> list[str] | None:
    """Pause a workflow: its unfinished runs are told (their ids); None when it was already paused."""
    inserted = await conn.fetchval(
        """INSERT INTO workflow_pauses (workflow, paused_by, reason, pause_now) VALUES ($1, $2, $3, $4)
           ON CONFLICT (workflow) DO NOTHING RETURNING true""", workflow, by, reason, now)
    if not inserted:
        return None
    return await _signal_workflow_runs(conn, workflow)


async def resume_workflow_txn(conn: asyncpg.Connection, workflow: str) -> tuple[asyncpg.Record, list[str]] | None:
    """Lift a workflow's pause: (the pause it was, its unfinished runs, told); None when it was not paused."""
    old = await conn.fetchrow(
        "DELETE FROM workflow_pauses WHERE workflow = $1 RETURNING paused_by, paused_at, reason, pause_now", workflow)
    if old is None:
        return None
    return old, await _signal_workflow_runs(conn, workflow)


async def _signal_workflow_runs(conn: asyncpg.Connection, workflow: str) -> list[str]:
    rows = await conn.fetch(
        f"""UPDATE runs SET signal_version = signal_version + 1
            WHERE workflow = $1 AND status IN {ACTIVE} AND paused_by IS NULL RETURNING run_id::text""", workflow)
    return [r["run_id"] for r in rows]


async def paused_workflows(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"""SELECT wp.workflow, wp.paused_by, wp.paused_at, wp.reason, wp.pause_now,
                   (SELECT count(*) FROM runs r WHERE r.workflow = wp.workflow AND r.status IN {ACTIVE}) AS runs,
                   (SELECT count(*) FROM runs r WHERE r.workflow = wp.workflow AND r.status = 'paused') AS parked
            FROM workflow_pauses wp ORDER BY wp.paused_at""")
    return [dict(r) for r in rows]


async def unsettled(conn: asyncpg.Connection | asyncpg.Pool, run_ids: list[str]) -> list[str]:
    """Of these paused runs, those a worker still holds (finishing a step, or yet to record run.paused)."""
    rows = await conn.fetch(
        """SELECT run_id::text FROM runs
           WHERE run_id = ANY($1::uuid[]) AND status NOT IN ('paused', 'queued', 'completed', 'failed', 'cancelled')
             AND lease_owner IS NOT NULL AND lease_expires > now()""", run_ids)
    return [r["run_id"] for r in rows]
