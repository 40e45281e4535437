"""`wait` steps and outside events meeting in Postgres, exactly once and without a lost race.

A wait is registered in the transaction that commits its step.waiting event (`register_txn`, from the
event writer); an event is matched against the open waits in the transaction that records it
(`deliver_txn`, from the client). Both first take transaction-scoped advisory locks, so whichever
commits second sees the other: an event that arrives first is found by the wait (within its lookback
window), a wait that registers first is found by the event, and two at the same moment serialize on
the locks. The locks live for one transaction only (safe behind a transaction-mode pooler).

Three levels, so that events with different keys do not queue behind each other and a transaction
never needs more than a few locks: an event takes the global lock and its name's lock shared, and its
(name, key) lock exclusive. A wait with a key takes the same, a wait without a key (it matches any key)
its name's lock exclusive. A writer batch that would need more than `MAX_LOCKS` locks (a foreach of
thousands of waits) takes the global lock exclusive instead: it briefly holds up every event, never
the lock table (a hostile workflow cannot exhaust Postgres' shared lock memory and fail other runs'
commits).

Lock order: the global lock; per name (sorted) the name's lock, then its (name, key) locks (sorted);
then run rows. The writer and a delivery both follow it. The locks are taken in one statement.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import asyncpg


def ts_to_dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


MAX_LOCKS = 64
"""Most wait locks one writer transaction takes one by one (beyond: the global lock, exclusive)."""

_LOCKS = """SELECT count(CASE WHEN x THEN pg_advisory_xact_lock(k) ELSE pg_advisory_xact_lock_shared(k) END)
              FROM unnest($1::bigint[], $2::bool[]) AS t(k, x)"""


def _lock_id(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(("agentrt.wait", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_GLOBAL = _lock_id()


_EVENT_JSON = """jsonb_build_object('event_id', e.event_id::text, 'name', e.name, 'key', e.key, 'data', e.data,
                                    'received_at', to_char(e.received_at AT TIME ZONE 'UTC',
                                                           'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))"""


async def lock_txn(conn: asyncpg.Connection, pairs: list[tuple[str, str | None]]) -> None:
    """Take the locks for these waits' (event name, key) pairs, in the lock order, before anything else
    in the transaction. A None key: the wait matches any key (the name's lock, exclusive)."""
    if not pairs:
        return
    by_name: dict[str, set[str | None]] = {}
    for name, key in pairs:
        by_name.setdefault(name, set()).add(key)
    ids, exclusive = [_GLOBAL], [False]
    for name in sorted(by_name):
        keys = by_name[name]
        ids.append(_lock_id(name))
        exclusive.append(None in keys)
        for key in sorted(k for k in keys if k is not None):
            ids.append(_lock_id(name, key))
            exclusive.append(True)
    if len(ids) > MAX_LOCKS:
        ids, exclusive = [_GLOBAL], [True]
    await conn.fetchval(_LOCKS, ids, exclusive)


async def lock_event_txn(conn: asyncpg.Connection, name: str, key: str | None) -> None:
    """An event's locks: the global and its name's shared, its (name, key) exclusive. An event without
    a key meets only waits without a key, which hold the name's lock exclusive: shared is enough."""
    ids, exclusive = [_GLOBAL, _lock_id(name)], [False, False]
    if key is not None:
        ids.append(_lock_id(name, key))
        exclusive.append(True)
    await conn.fetchval(_LOCKS, ids, exclusive)


async def register_txn(conn: asyncpg.Connection, run_id: str, step_id: str, item: int | None, attempt: int,
                       name: str, key: str | None, since: float, deadline: float | None) -> bool:
    """Open a wait and take an event that raced ahead of it, if one is in the window. True: one was.

    The caller holds the wait's locks (`lock_txn`) and the run's row. An event already delivered to
    this run (an earlier wait of the same run) is not delivered twice; the oldest in the window goes first.
    """
    await conn.execute(
        """INSERT INTO event_waits (run_id, step_id, item, attempt, name, key, since, deadline)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING""",
        run_id, step_id, -1 if item is None else item, attempt, name, key, ts_to_dt(since), ts_to_dt(deadline))
    matched = await conn.fetchval(
        f"""WITH early AS (
                SELECT e.event_id, {_EVENT_JSON} AS body FROM external_events e
                 WHERE e.name = $5 AND ($6::text IS NULL OR e.key = $6) AND e.received_at >= $7
                   AND NOT EXISTS (SELECT 1 FROM event_waits d WHERE d.run_id = $1 AND d.event_id = e.event_id)
                 ORDER BY e.received_at LIMIT 1
            ), taken AS (
                UPDATE event_waits w SET status = 'received', event_id = early.event_id, event = early.body,
                       closed_at = now()
                  FROM early
                 WHERE w.run_id = $1 AND w.step_id = $2 AND w.item = $3 AND w.attempt = $4 AND w.status = 'waiting'
                RETURNING w.event_id
            )
            UPDATE external_events SET delivered_to = array_append(delivered_to, $1::uuid)
             WHERE event_id = (SELECT event_id FROM taken) RETURNING true""",
        run_id, step_id, -1 if item is None else item, attempt, name, key, ts_to_dt(since))
    if matched:
        await conn.execute("UPDATE runs SET signal_version = signal_version + 1 WHERE run_id = $1", run_id)
    return bool(matched)


async def deliver_txn(conn: asyncpg.Connection, event_id: str, name: str, key: str | None) -> list[str]:
    """Resume every open wait the (just inserted) event matches; returns their run ids, signalled.

    A wait without a key takes any event of its name; a wait past its deadline takes none (its run
    times it out). Runs are signalled in run-id order. The caller took the event's locks first
    (`lock_event_txn`).
    """
    rows = await conn.fetch(
        f"""WITH hit AS (
                UPDATE event_waits w SET status = 'received', event_id = e.event_id, event = {_EVENT_JSON},
                       closed_at = now()
                  FROM external_events e
                 WHERE e.event_id = $1 AND w.name = $2 AND w.status = 'waiting'
                   AND (w.key IS NULL OR w.key = $3) AND (w.deadline IS NULL OR w.deadline > now())
                RETURNING w.run_id
            )
            SELECT DISTINCT run_id::text FROM hit ORDER BY 1""",
        event_id, name, key)
    run_ids = [r["run_id"] for r in rows]
    if run_ids:
        await conn.execute(
            """UPDATE external_events SET delivered_to = $2::uuid[] WHERE event_id = $1""", event_id, run_ids)
        await conn.execute(
            """UPDATE runs SET signal_version = signal_version + 1 WHERE run_id IN (
                   SELECT run_id FROM runs WHERE run_id = ANY($1::uuid[]) ORDER BY run_id FOR NO KEY UPDATE)""",
            run_ids)
    return run_ids


async def time_out(pool: asyncpg.Pool, run_id: str, step_id: str, item: int | None) -> bool:
    """Close a wait whose deadline passed. False: it was closed already (an event got there first)."""
    closed = await pool.fetchval(
        """UPDATE event_waits SET status = 'timed_out', closed_at = now()
            WHERE run_id = $1 AND step_id = $2 AND item = $3 AND status = 'waiting' RETURNING true""",
        run_id, step_id, -1 if item is None else item)
    return bool(closed)


async def cancel_txn(conn: asyncpg.Connection, run_id: str) -> None:
    """The run ended (cancelled, failed): its open waits take no more events."""
    await conn.execute(
        """UPDATE event_waits SET status = 'cancelled', closed_at = now()
            WHERE run_id = $1 AND status = 'waiting'""", run_id)


async def closed_waits(conn: asyncpg.Connection | asyncpg.Pool, run_id: str) -> list[dict[str, Any]]:
    """A run's waits that an event resumed or the deadline closed (for the run's actor to record)."""
    rows = await conn.fetch(
        """SELECT step_id, item, attempt, status, event FROM event_waits
            WHERE run_id = $1 AND status IN ('received', 'timed_out')""", run_id)
    return [{"step_id": r["step_id"], "item": None if r["item"] < 0 else r["item"], "attempt": r["attempt"],
             "received": r["status"] == "received", "event": r["event"]} for r in rows]


async def open_waits(pool: asyncpg.Pool, *, name: str | None = None, key: str | None = None,
                     run_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Waits still open (for listings and the console's send-event dialog), oldest first."""
    rows = await pool.fetch(
        """SELECT w.run_id::text, r.workflow, w.step_id, w.item, w.name, w.key, w.deadline, w.created_at
             FROM event_waits w JOIN runs r ON r.run_id = w.run_id
            WHERE w.status = 'waiting' AND ($1::text IS NULL OR w.name = $1) AND ($2::text IS NULL OR w.key = $2)
              AND ($3::uuid IS NULL OR w.run_id = $3)
            ORDER BY w.created_at LIMIT $4""", name, key, run_id, limit)
    return [{"run_id": r["run_id"], "workflow": r["workflow"], "step_id": r["step_id"],
             "item": None if r["item"] < 0 else r["item"], "name": r["name"], "key": r["key"],
             "deadline": r["deadline"], "since": r["created_at"]} for r in rows]
