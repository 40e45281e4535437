"""The `schedules` and `schedule_ticks` tables (migration 0007). Functions ending in `_txn` take an open
connection inside a transaction.

- `sync`: the schedule rows follow the active workflow versions: a new schedule starts at its first tick
  after now; a changed `on.schedule` (cron, every, timezone, catch_up, inputs) starts again from now; another
  version with the same schedule only moves `def_hash`; a workflow deleted, or its schedule removed, leaves
  an inactive row (so a paused schedule stays paused if its file comes back). Syncs take an advisory lock,
  so two workers never apply an older view over a newer one.
- `lock_due_txn`, `insert_tick_txn`, `advance_txn`: one firing (see worker/schedules/loop.py).
- `rows`, `set_paused_txn`: what the client lists and pauses.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from worker.schedules.ticks import Cadence

_SYNC_LOCK = 0x7363686564  # "sched": one schedule sync at a time across workers


@dataclass(frozen=True, slots=True)
class DueSchedule:
    workflow: str
    def_hash: str
    spec: dict[str, Any]
    next_fire_at: datetime


async def files_stamp(conn: asyncpg.Pool | asyncpg.Connection) -> tuple[Any, ...]:
    """Changes whenever a workflow file is loaded, found invalid or deleted (by any worker or client)."""
    row = await conn.fetchrow("SELECT count(*) AS n, max(updated_at) AS at FROM workflow_files")
    return (row["n"], row["at"]) if row is not None else (0, None)


async def sync(pool: asyncpg.Pool) -> list[str]:
    """Make the schedule rows follow the active workflow versions; returns what changed, for the log."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SYNC_LOCK)
        now: datetime = await conn.fetchval("SELECT now()")
        wanted = await conn.fetch(
            """SELECT name, def_hash, spec FROM (
                   SELECT DISTINCT ON (f.name) f.name, f.def_hash, d.spec -> 'on' -> 'schedule' AS spec
                     FROM workflow_files f JOIN definitions d ON d.def_hash = f.def_hash
                    WHERE f.status <> 'deleted' AND f.name IS NOT NULL
                    ORDER BY f.name, f.updated_at DESC) active
                WHERE jsonb_typeof(spec) = 'object'""")
        have = {r["workflow"]: r for r in await conn.fetch("SELECT workflow, def_hash, spec, active FROM schedules")}
        changed: list[tuple[str, str, dict[str, Any]]] = []
        moved: list[tuple[str, str]] = []
        for r in wanted:
            old = have.get(r["name"])
            if old is None or not old["active"] or old["spec"] != r["spec"]:
                changed.append((r["name"], r["def_hash"], r["spec"]))
            elif old["def_hash"] != r["def_hash"]:
                moved.append((r["name"], r["def_hash"]))
        # cron look-ups can take milliseconds each: off the event loop
        starts = await asyncio.to_thread(lambda: [Cadence.from_spec(spec).next_after(now) for _, _, spec in changed])
        await conn.executemany(
            """INSERT INTO schedules (workflow, def_hash, spec, active, next_fire_at) VALUES ($1, $2, $3, true, $4)
               ON CONFLICT (workflow) DO UPDATE SET def_hash = EXCLUDED.def_hash, spec = EXCLUDED.spec, active = true,
                   next_fire_at = EXCLUDED.next_fire_at, updated_at = now()""",
            [(name, def_hash, spec, start) for (name, def_hash, spec), start in zip(changed, starts, strict=True)])
        await conn.executemany("UPDATE schedules SET def_hash = $2, updated_at = now() WHERE workflow = $1", moved)
        gone = await conn.fetch(
            """UPDATE schedules SET active = false, next_fire_at = NULL, updated_at = now()
               WHERE active AND NOT (workflow = ANY($1::text[])) RETURNING workflow""",
            [r["name"] for r in wanted])
    return [f"{name} (scheduled)" for name, _, _ in changed] + [f"{r['workflow']} (unscheduled)" for r in gone]


async def next_due(conn: asyncpg.Pool | asyncpg.Connection) -> tuple[datetime, datetime | None]:
    """(the database's now, the earliest next fire time of an active, unpaused schedule)."""
    row = await conn.fetchrow(
        "SELECT now() AS now, (SELECT min(next_fire_at) FROM schedules WHERE active AND NOT paused) AS due")
    assert row is not None
    return row["now"], row["due"]


async def lock_due_txn(conn: asyncpg.Connection, now: datetime, limit: int) -> list[DueSchedule]:
    """Lock up to `limit` due schedules, most overdue first; those another worker holds are skipped."""
    rows = await conn.fetch(
        """SELECT workflow, def_hash, spec, next_fire_at FROM schedules
            WHERE active AND NOT paused AND next_fire_at <= $1
            ORDER BY next_fire_at LIMIT $2 FOR UPDATE SKIP LOCKED""", now, limit)
    return [DueSchedule(r["workflow"], r["def_hash"], r["spec"], r["next_fire_at"]) for r in rows]


async def insert_tick_txn(conn: asyncpg.Connection, workflow: str, tick_at: datetime, *, def_hash: str,
                          fired_by: str, run_id: str | None, error: str | None) -> bool:
    """Record a tick as fired. False: it was already (the UNIQUE key is the last word on exactly once)."""
    inserted = await conn.fetchval(
        """INSERT INTO schedule_ticks (workflow, tick_at, run_id, def_hash, fired_by, error)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workflow, tick_at) DO NOTHING RETURNING true""",
        workflow, tick_at, run_id, def_hash, fired_by, error)
    return bool(inserted)


async def advance_txn(conn: asyncpg.Connection, workflow: str, next_fire_at: datetime | None, *,
                      fired_at: datetime | None, run_id: str | None, skipped: int) -> None:
    await conn.execute(
        """UPDATE schedules SET next_fire_at = $2, last_fire_at = COALESCE($3, last_fire_at),
                  last_run_id = COALESCE($4, last_run_id), skipped_ticks = skipped_ticks + $5, updated_at = now()
            WHERE workflow = $1""", workflow, next_fire_at, fired_at, run_id, skipped)


async def prune_ticks(pool: asyncpg.Pool, older_than: timedelta, limit: int = 5000) -> int:
    """Forget fired ticks older than `older_than` (at most `limit` a call). Safe: a schedule never fires a tick
    before its next_fire_at, which is past every tick it fired; the table is its history, not its guard."""
    status = await pool.execute(
        """DELETE FROM schedule_ticks WHERE ctid IN (
               SELECT ctid FROM schedule_ticks WHERE fired_at < now() - $1::interval LIMIT $2)""", older_than, limit)
    return int(status.split()[-1]) if status.startswith("DELETE") else 0


_ROW = """s.workflow, s.def_hash, s.spec, s.next_fire_at, s.last_fire_at, s.last_run_id::text, s.skipped_ticks,
          s.paused, s.paused_by, s.paused_reason, s.paused_at"""


async def rows(conn: asyncpg.Pool | asyncpg.Connection, workflow: str | None = None) -> list[asyncpg.Record]:
    """Active schedules (or one), with their last run's status and the last tick's error, if any."""
    return list(await conn.fetch(
        f"""SELECT {_ROW}, r.status AS last_run_status, t.error AS last_error, t.tick_at AS last_tick_at
              FROM schedules s
              LEFT JOIN runs r ON r.run_id = s.last_run_id
              LEFT JOIN LATERAL (SELECT error, tick_at FROM schedule_ticks k WHERE k.workflow = s.workflow
                                  ORDER BY tick_at DESC LIMIT 1) t ON true
             WHERE s.active AND ($1::text IS NULL OR s.workflow = $1)
             ORDER BY s.workflow""", workflow))


async def set_paused_txn(conn: asyncpg.Connection, workflow: str, paused: bool, by: str,
                         reason: str | None) -> tuple[asyncpg.Record | None, bool]:
    """(the row as it was, whether it changed). A row already in that state is returned unchanged."""
    before = await conn.fetchrow(
        f"SELECT {_ROW} FROM schedules s WHERE s.workflow = $1 AND s.active FOR UPDATE", workflow)
    if before is None or before["paused"] == paused:
        return before, False
    if paused:
        await conn.execute(
            """UPDATE schedules SET paused = true, paused_by = $2, paused_reason = $3, paused_at = now(),
                      updated_at = now() WHERE workflow = $1""", workflow, by, reason)
    else:
        await conn.execute(
            """UPDATE schedules SET paused = false, paused_by = NULL, paused_reason = NULL, paused_at = NULL,
                      updated_at = now() WHERE workflow = $1""", workflow)
    return before, True
