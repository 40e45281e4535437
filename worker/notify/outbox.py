"""The notifications outbox in Postgres (table `notifications`, migration 0009). Functions ending in `_txn` take an
open connection inside the caller's transaction.

- `insert_txn`: the rows a commit caused, in that commit (the writer's transaction: worker/store/writer.py).
- `mark_expiring_txn`: the pending tasks whose deadline is within the lead time, marked once (the periodic scan).
- `claim`, `delivered`, `failed`: the dispatcher's side. A claim moves `next_attempt_at` past the delivery's
  timeout and counts the attempt, so the row is due again for any worker if this one dies mid-delivery.
- `rows`: what `agentrt notifications` lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from worker.store.pool import dumps


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One notification to one target, as a commit writes it."""

    notification_id: str | None
    """Stable (uuid5 of kind and subject); None for worker.lost: derived in SQL (see `insert_txn`)."""
    target: str
    kind: str
    subject: str
    workflow: str | None
    run_id: str | None
    task_id: str | None
    body: dict[str, Any]
    delay: float = 0.0
    """Seconds before its first delivery."""
    give_up_after: float = 86400.0


def _merge(rows: Sequence[OutboxRow]) -> list[OutboxRow]:
    """One row per (kind, subject, target), sorted: a statement may not touch a row twice, and rows are locked
    in one order across transactions (no deadlock between two workers taking over runs of one lost worker)."""
    merged: dict[tuple[str, str, str], OutboxRow] = {}
    for row in rows:
        key = (row.kind, row.subject, row.target)
        seen = merged.get(key)
        if seen is None:
            merged[key] = row
        elif row.kind == "worker.lost":
            a, b = seen.body["worker"], row.body["worker"]
            runs = (a["runs"] + b["runs"])[:50]
            merged[key] = replace(seen, body={**seen.body, "worker": {
                **a, "run_count": a["run_count"] + b["run_count"], "runs": runs}})
    return [merged[k] for k in sorted(merged)]


_INSERT_SQL = """
INSERT INTO notifications AS n (notification_id, target, kind, subject, workflow, run_id, task_id, body,
                                next_attempt_at, give_up_at)
SELECT coalesce(r.id, md5(r.kind || ':' || r.subject || ':' || coalesce(
           (SELECT extract(epoch FROM w.heartbeat_at)::text FROM workers w WHERE w.worker_id = r.subject), ''))::uuid),
       r.target, r.kind, r.subject, r.workflow, r.run_id, r.task_id, r.body::jsonb,
       now() + make_interval(secs => r.delay), now() + make_interval(secs => r.delay + r.give_up)
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::uuid[], $8::text[],
            $9::float8[], $10::float8[])
     AS r(id, target, kind, subject, workflow, run_id, task_id, body, delay, give_up)
ORDER BY r.kind, r.subject, r.target
ON CONFLICT (notification_id, target) DO UPDATE SET
    body = jsonb_set(jsonb_set(n.body, '{worker,run_count}',
                               to_jsonb((n.body #>> '{worker,run_count}')::int
                                        + (EXCLUDED.body #>> '{worker,run_count}')::int)),
                     '{worker,runs}',
                     CASE WHEN jsonb_array_length(n.body #> '{worker,runs}') >= 50 THEN n.body #> '{worker,runs}'
                          ELSE (n.body #> '{worker,runs}') || (EXCLUDED.body #> '{worker,runs}') END)
WHERE n.kind = 'worker.lost' AND n.status = 'pending' AND n.claimed_by IS NULL
"""


async def insert_txn(conn: asyncpg.Connection, rows: Sequence[OutboxRow]) -> None:
    """Write the rows (a notification already there is left as it is; a pending worker.lost gains the runs).

    A worker.lost id is md5(kind, lost worker, its last heartbeat) as a uuid: every takeover from one death
    agrees on it, across workers; a worker id reused after a restart (AGENTRT_WORKER_ID) heartbeats anew, so its
    next death is a new notification."""
    if not rows:
        return
    merged = _merge(rows)
    cols: list[list[Any]] = [[] for _ in range(10)]
    for r in merged:
        for col, value in zip(cols, (r.notification_id, r.target, r.kind, r.subject, r.workflow, r.run_id, r.task_id,
                                     dumps(r.body), r.delay, r.give_up_after), strict=True):
            col.append(value)
    await conn.execute(_INSERT_SQL, *cols)


async def mark_expiring_txn(conn: asyncpg.Connection, lead: float, limit: int = 500) -> list[dict[str, Any]]:
    """Pending tasks whose deadline is at most `lead` seconds away (and was further than that when they were
    created: a shorter timeout is announced by task.created already), marked so no other scan returns them."""
    rows = await conn.fetch(
        """WITH due AS (
               SELECT task_id FROM human_tasks
               WHERE status = 'pending' AND deadline IS NOT NULL AND expiry_notified_at IS NULL
                 AND deadline <= now() + make_interval(secs => $1) AND deadline > now()
                 AND deadline - make_interval(secs => $1) > created_at
               ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED)
           UPDATE human_tasks t SET expiry_notified_at = now()
           FROM due, runs r
           WHERE t.task_id = due.task_id AND r.run_id = t.run_id
           RETURNING t.task_id::text, t.run_id::text, r.workflow, t.step_id, t.item, t.kind, t.prompt,
                     extract(epoch FROM t.deadline)::float8 AS deadline, t.on_timeout, t.approvers""",
        lead, limit)
    return [dict(r) for r in rows]


@dataclass(frozen=True, slots=True)
class Claimed:
    notification_id: str
    target: str
    kind: str
    body: dict[str, Any]
    attempts: int
    """This delivery's number (1: the first)."""
    give_up_at: datetime


async def claim(pool: asyncpg.Pool, worker_id: str, *, limit: int, hold: float) -> list[Claimed]:
    """Take up to `limit` due rows for `hold` seconds (the delivery's timeout and a margin)."""
    rows = await pool.fetch(
        """WITH due AS (
               SELECT notification_id, target FROM notifications
               WHERE status = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           UPDATE notifications n SET claimed_by = $1, attempts = n.attempts + 1,
                  claimed_until = now() + make_interval(secs => $3),
                  next_attempt_at = now() + make_interval(secs => $3)
           FROM due WHERE n.notification_id = due.notification_id AND n.target = due.target
           RETURNING n.notification_id::text, n.target, n.kind, n.body, n.attempts, n.give_up_at""",
        worker_id, limit, hold)
    return [Claimed(r["notification_id"], r["target"], r["kind"], r["body"], r["attempts"], r["give_up_at"])
            for r in rows]


async def delivered(pool: asyncpg.Pool, done: Sequence[tuple[Claimed, int]]) -> None:
    """The receivers accepted these (with their HTTP statuses); also when this worker's claim had run out
    meanwhile: they did arrive. One statement for many."""
    if not done:
        return
    await pool.execute(
        """UPDATE notifications n SET status = 'delivered', finished_at = now(), last_status = d.status,
                  last_error = NULL, claimed_by = NULL, claimed_until = NULL
           FROM unnest($1::uuid[], $2::text[], $3::int[]) AS d(id, target, status)
           WHERE n.notification_id = d.id AND n.target = d.target AND n.status = 'pending'""",
        [c.notification_id for c, _ in done], [c.target for c, _ in done], [status for _, status in done])


async def failed(pool: asyncpg.Pool, worker_id: str, c: Claimed, *, error: str, status: int | None,
                 retry_in: float) -> str | None:
    """This attempt failed: due again in `retry_in` seconds (never after give_up_at); at give_up_at, failed.
    Only while this worker still holds the claim. Returns the row's status then (None: the claim was lost)."""
    result: str | None = await pool.fetchval(
        """UPDATE notifications SET
               status = CASE WHEN now() >= give_up_at THEN 'failed' ELSE 'pending' END,
               finished_at = CASE WHEN now() >= give_up_at THEN now() END,
               next_attempt_at = least(now() + make_interval(secs => $4), give_up_at),
               claimed_by = NULL, claimed_until = NULL, last_error = $5, last_status = $6
           WHERE notification_id = $1 AND target = $2 AND status = 'pending' AND claimed_by = $3 AND attempts = $7
           RETURNING status""",
        c.notification_id, c.target, worker_id, retry_in, error[:1000], status, c.attempts)
    return result


async def next_due_in(pool: asyncpg.Pool) -> float | None:
    """Seconds until the earliest pending row is due (None: nothing pending)."""
    value: float | None = await pool.fetchval(
        "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM notifications WHERE status = 'pending'")
    return value


async def rows(pool: asyncpg.Pool, *, status: str | None, limit: int) -> list[asyncpg.Record]:
    """The newest rows (of one status), for listings."""
    fetched: list[asyncpg.Record] = await pool.fetch(
        """SELECT notification_id::text, target, kind, subject, workflow, run_id::text, task_id::text, body, status,
                  attempts, created_at, next_attempt_at, give_up_at, claimed_by, claimed_until, finished_at,
                  last_status, last_error
           FROM notifications WHERE ($1::text IS NULL OR status = $1)
           ORDER BY created_at DESC, notification_id, target LIMIT $2""",
        status, limit)
    return fetched
