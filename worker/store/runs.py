"""Run rows, the event log, leases and signals. Functions ending in `_txn` take an open connection."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from worker.runlog import Event
from worker.store import concurrency
from worker.store.concurrency import Admission, Admitted
from worker.store.waits import closed_waits, ts_to_dt

TERMINAL = ("completed", "failed", "cancelled")


RUN_EVENTS = "run_id = $1 AND history_at = $2"
"""The WHERE clause of one run's events: run id $1, the day its history began $2 (`runs.history_at`).

Always both, as parameters: with the partition key a value, Postgres prunes `events` to the run's one
partition before it opens any (a generic plan prunes at executor start: "Subplans Removed: 364"). Asking for
history_at with a subquery instead prunes only while executing, after the plan has opened every partition
and its index: 7-15 ms a read at a year of daily partitions, against 0.3 ms (bench/scale.py)."""


def row_to_event(row: asyncpg.Record) -> Event:
    return Event(type=row["type"], ts=row["ts"].timestamp(), step_id=row["step_id"], item=row["item"],
                 attempt=row["attempt"], data=row["data"] or {}, seq=row["seq"])


async def insert_run_txn(conn: asyncpg.Connection, *, run_id: str, workflow: str, def_hash: str,
                         inputs: dict[str, Any], created: Event, requested_by: str | None,
                         parent_run_id: str | None = None, parent_step: str | None = None,
                         parent_item: int | None = None, traceparent: str | None = None,
                         admission: Admission | None = None) -> Admitted | None:
    """Insert a run and its `run.created` event (seq 1); None when the run already existed.

    `traceparent` (W3C) makes the run's trace a part of the caller's (see worker/telemetry). The run's
    `trigger` column (what started it, for listings) is the kind of the event's `trigger` entry, `parent`
    for a child run, NULL for a person. `admission` gives its priority (default: its parent's, else normal)
    and its concurrency key: such a run is admitted or queued under its key's lock (worker/store/concurrency.py).
    What the result's `wake` and `signal` list goes to the work stream after the commit.
    """
    trigger = created.data.get("trigger")
    kind = trigger.get("kind") if isinstance(trigger, dict) else None
    if kind is None and parent_run_id is not None:
        kind = "parent"
    adm = admission or Admission()
    if adm.key is not None:
        await concurrency.lock_txn(conn, [(workflow, adm.key)])
    priority = await conn.fetchval(
        """INSERT INTO runs (run_id, workflow, def_hash, inputs, requested_by, parent_run_id, parent_step,
                             parent_item, enqueued_at, next_seq, traceparent, trigger, status, priority,
                             concurrency_key, concurrency_limit, admit_seq)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), 2, $9, $10,
                   CASE WHEN $12::text IS NULL THEN 'pending' ELSE 'queued' END,
                   coalesce($11, (SELECT p.priority FROM runs p WHERE p.run_id = $6), 'normal'),
                   $12, $13, CASE WHEN $12::text IS NULL THEN NULL ELSE nextval('runs_admit_seq') END)
           ON CONFLICT (run_id) DO NOTHING RETURNING priority""",
        run_id, workflow, def_hash, inputs, requested_by, parent_run_id, parent_step, parent_item, traceparent,
        kind, adm.priority, adm.key, adm.limit if adm.key is not None else None,
    )
    if priority is None:
        return None
    await conn.execute(
        """INSERT INTO events (run_id, seq, ts, type, data, history_at)
           SELECT $1, 1, $2, $3, $4, history_at FROM runs WHERE run_id = $1""",
        run_id, ts_to_dt(created.ts), created.type, created.data,
    )
    if adm.key is None:
        return Admitted("pending", priority, wake=[(run_id, priority)])
    return await concurrency.admit_txn(conn, run_id, workflow, adm, priority=priority)


@dataclass(frozen=True, slots=True)
class Lease:
    run_id: str
    epoch: int
    def_hash: str
    status: str
    signal_version: int
    cancel_requested: bool
    cancel_reason: str | None
    previous_owner: str | None
    parent_run_id: str | None = None
    workflow: str = ""
    priority: str = "normal"
    """high | normal | low: what the run's work (and, later, its limits) are ordered by."""
    concurrency_key: str | None = None
    """Its key when its workflow has `concurrency:`: its end releases the key's slot (worker/store/writer.py)."""
    paused: bool = False
    """The run or its workflow is paused: the actor reads the signals before it decides anything."""
    history_at: datetime | None = None
    """The day its history began: which partition of `events` holds its events (RUN_EVENTS)."""


async def acquire_leases(pool: asyncpg.Pool, run_ids: list[str], worker_id: str, ttl: float) -> list[Lease]:
    """Take the given runs that are active and not held by a live lease (bumps each fencing epoch).

    One round trip for a whole batch of work-stream entries; runs that are finished, parked and not
    due, or held by another worker are simply not returned.
    """
    rows = await pool.fetch(
        """WITH prev AS (
               SELECT run_id, lease_owner FROM runs
               WHERE run_id = ANY($1::uuid[]) AND status NOT IN ('queued', 'completed', 'failed', 'cancelled')
                 AND (lease_owner IS NULL OR lease_expires < now())
               FOR UPDATE SKIP LOCKED)
           UPDATE runs SET lease_owner = $2, lease_epoch = runs.lease_epoch + 1,
                  lease_expires = now() + make_interval(secs => $3),
                  status = CASE WHEN runs.status = 'pending' THEN 'running' ELSE runs.status END,
                  updated_at = now()
           FROM prev
           WHERE runs.run_id = prev.run_id
           RETURNING runs.run_id::text, runs.lease_epoch, runs.def_hash, runs.status, runs.signal_version,
                     runs.cancel_requested, runs.cancel_reason, prev.lease_owner AS previous_owner,
                     runs.parent_run_id::text, runs.workflow, runs.priority, runs.concurrency_key,
                     (runs.paused_at IS NOT NULL OR EXISTS (
                         SELECT 1 FROM workflow_pauses wp WHERE wp.workflow = runs.workflow)) AS paused,
                     runs.history_at""",
        run_ids, worker_id, ttl,
    )
    return [Lease(r["run_id"], r["lease_epoch"], r["def_hash"], r["status"], r["signal_version"],
                  r["cancel_requested"], r["cancel_reason"], r["previous_owner"], r["parent_run_id"],
                  r["workflow"], r["priority"], r["concurrency_key"], r["paused"], r["history_at"]) for r in rows]


async def history_of(pool: asyncpg.Pool | asyncpg.Connection, run_id: str) -> datetime | None:
    """The run's `history_at` (None: no such run)."""
    found: datetime | None = await pool.fetchval("SELECT history_at FROM runs WHERE run_id = $1", run_id)
    return found


async def load_events(pool: asyncpg.Pool | asyncpg.Connection, run_id: str,
                      history_at: datetime | None = None) -> list[Event]:
    """The run's committed events in order; `history_at` saves a round trip when the caller has it.

    A run always has its `run.created` event, so finding none under a `history_at` the caller read earlier
    means retention moved the run to today's partition meanwhile (worker/history/retention.py; the move is one
    transaction): read where it points now."""
    for known in (history_at, None):
        at = known if known is not None else await history_of(pool, run_id)
        if at is None:
            return []
        rows = await pool.fetch(
            f"SELECT seq, ts, type, step_id, item, attempt, data FROM events WHERE {RUN_EVENTS} ORDER BY seq",
            run_id, at)
        if rows or known is None:
            return [row_to_event(r) for r in rows]
    return []


@dataclass(frozen=True, slots=True)
class HeldRun:
    run_id: str
    epoch: int
    signal_version: int
    cancel_requested: bool


async def renew_leases(pool: asyncpg.Pool, worker_id: str, ttl: float, run_ids: list[str]) -> dict[str, HeldRun]:
    """Extend the leases of the runs this worker is driving; returns those it still holds.

    Only runs with a live actor are renewed: a run whose actor gave up (e.g. Postgres went away
    mid-commit) must be allowed to expire so that the reconciler hands it out again.
    """
    rows = await pool.fetch(
        """UPDATE runs SET lease_expires = now() + make_interval(secs => $2)
           WHERE lease_owner = $1 AND run_id = ANY($3::uuid[])
             AND status NOT IN ('completed', 'failed', 'cancelled')
           RETURNING run_id, lease_epoch, signal_version, cancel_requested""",
        worker_id, ttl, run_ids,
    )
    return {str(r["run_id"]): HeldRun(str(r["run_id"]), r["lease_epoch"], r["signal_version"],
                                      r["cancel_requested"]) for r in rows}


async def release_lease(pool: asyncpg.Pool, run_id: str, worker_id: str, epoch: int, *,
                        seen_signal_version: int, wake_at: float | None) -> bool:
    """Let go of a parked run. False when a signal arrived since `seen_signal_version` (keep driving)."""
    row = await pool.fetchval(
        """UPDATE runs SET lease_owner = NULL, lease_expires = NULL, wake_at = $4, seen_signal_version = $5,
                  enqueued_at = CASE WHEN $4::timestamptz IS NULL THEN enqueued_at ELSE NULL END
           WHERE run_id = $1 AND lease_owner = $2 AND lease_epoch = $3 AND signal_version <= $5
           RETURNING true""",
        run_id, worker_id, epoch, ts_to_dt(wake_at), seen_signal_version,
    )
    return bool(row)


async def drop_lease(pool: asyncpg.Pool, run_id: str, worker_id: str, epoch: int) -> None:
    """Release a lease without conditions (shutdown, errors): another worker may take the run at once."""
    await pool.execute(
        """UPDATE runs SET lease_owner = NULL, lease_expires = NULL, enqueued_at = NULL
           WHERE run_id = $1 AND lease_owner = $2 AND lease_epoch = $3""",
        run_id, worker_id, epoch,
    )


@dataclass(frozen=True, slots=True)
class Signals:
    signal_version: int
    cancel_requested: bool
    cancel_reason: str | None
    tasks: list[dict[str, Any]]
    children: list[dict[str, Any]]
    waits: list[dict[str, Any]]
    pause: dict[str, Any] | None = None
    """The pause in force (the run's own, else its workflow's): {by, at, reason, scope, now}; None: not paused."""


_PAUSE_HEAD = """
    SELECT r.signal_version, r.cancel_requested, r.cancel_reason,
           r.paused_by, extract(epoch FROM r.paused_at)::float8 AS paused_at, r.pause_reason, r.pause_now,
           wp.paused_by AS wf_by, extract(epoch FROM wp.paused_at)::float8 AS wf_at, wp.reason AS wf_reason,
           wp.pause_now AS wf_now
    FROM runs r LEFT JOIN workflow_pauses wp ON wp.workflow = r.workflow WHERE r.run_id = $1"""


def pause_in_force(head: Any) -> dict[str, Any] | None:
    """The run's own pause, else its workflow's, from a row of `_PAUSE_HEAD`."""
    if head is None:
        return None
    if head["paused_by"] is not None:
        return {"by": head["paused_by"], "at": head["paused_at"], "reason": head["pause_reason"], "scope": "run",
                "now": bool(head["pause_now"])}
    if head["wf_by"] is not None:
        return {"by": head["wf_by"], "at": head["wf_at"], "reason": head["wf_reason"], "scope": "workflow",
                "now": bool(head["wf_now"])}
    return None


async def load_signals(pool: asyncpg.Pool, run_id: str) -> Signals:
    """Everything decided from outside for this run: task decisions, finished children, events that
    resumed (or deadlines that closed) its waits, cancel."""
    async with pool.acquire() as conn:
        head = await conn.fetchrow(_PAUSE_HEAD, run_id)
        tasks = await conn.fetch(
            """SELECT task_id, step_id, item, kind, status, decided_by, reason, decision FROM human_tasks
               WHERE run_id = $1 AND status NOT IN ('pending', 'cancelled')""", run_id)
        children = await conn.fetch(
            """SELECT run_id, parent_step, parent_item, status, output, error FROM runs
               WHERE parent_run_id = $1 AND status IN ('completed', 'failed', 'cancelled')""", run_id)
        waits = await closed_waits(conn, run_id)
    return Signals(
        signal_version=head["signal_version"] if head else 0,
        cancel_requested=bool(head and head["cancel_requested"]),
        cancel_reason=head["cancel_reason"] if head else None,
        tasks=[dict(r) for r in tasks],
        children=[dict(r) for r in children],
        waits=waits,
        pause=pause_in_force(head),
    )


async def mark_seen_signals(pool: asyncpg.Pool, run_id: str, version: int) -> None:
    await pool.execute(
        "UPDATE runs SET seen_signal_version = GREATEST(seen_signal_version, $2) WHERE run_id = $1", run_id, version)


async def timeout_task(pool: asyncpg.Pool, task_id: str) -> str:
    """Apply a pending task's deadline atomically: "timed_out", "escalated" (on_timeout: escalate: the
    task stays open, flagged), or "" when a human decided first."""
    row = await pool.fetchval(
        """UPDATE human_tasks SET
               status = CASE WHEN on_timeout = 'escalate' THEN 'pending' ELSE 'timed_out' END,
               escalated = escalated OR on_timeout = 'escalate',
               deadline = CASE WHEN on_timeout = 'escalate' THEN NULL ELSE deadline END,
               decided_at = CASE WHEN on_timeout = 'escalate' THEN NULL ELSE now() END,
               decided_by = CASE WHEN on_timeout = 'escalate' THEN NULL ELSE 'system:timeout' END
           WHERE task_id = $1 AND status = 'pending'
           RETURNING CASE WHEN on_timeout = 'escalate' THEN 'escalated' ELSE 'timed_out' END""", task_id)
    return row or ""


async def reconcile(pool: asyncpg.Pool, redeliver_after: float, *, full: bool,
                    limit: int = 2000) -> list[tuple[str, str]]:
    """Runs that should be in the work stream but may not be: unleased active runs that are due, with their
    priorities (queued runs are not: their keys admit them, worker/store/concurrency.py).

    Only one worker reconciles at a time (a transaction-scoped advisory lock). It is ONE statement, so
    the lock is never held between statements: a worker frozen (SIGSTOP, GC pause) mid-reconcile cannot
    block every other worker's reconciler. `full` ignores when runs were last enqueued (used after Redis
    lost its data).
    """
    rows = await pool.fetch(
        """WITH lock AS (SELECT pg_try_advisory_xact_lock(7411) AS got)
           UPDATE runs SET enqueued_at = now()
           WHERE (SELECT got FROM lock) AND run_id IN (
             SELECT run_id FROM runs
             WHERE status IN ('pending', 'running', 'waiting', 'paused')
               AND (lease_owner IS NULL OR lease_expires < now())
               AND (status NOT IN ('waiting', 'paused') OR (wake_at IS NOT NULL AND wake_at <= now())
                    OR signal_version > seen_signal_version OR cancel_requested)
               AND ($1 OR enqueued_at IS NULL OR enqueued_at < now() - make_interval(secs => $2))
             ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED)
           RETURNING run_id, priority""",
        full, redeliver_after, limit,
    )
    return [(str(r["run_id"]), r["priority"]) for r in rows]


async def signal_run_txn(conn: asyncpg.Connection, run_id: str) -> None:
    await conn.execute("UPDATE runs SET signal_version = signal_version + 1 WHERE run_id = $1", run_id)


async def load_journal(pool: asyncpg.Pool, run_id: str, step_id: str, item: int | None) -> dict[int, Any]:
    rows = await pool.fetch(
        "SELECT call_index, data FROM step_journal WHERE run_id = $1 AND step_id = $2 AND item = $3",
        run_id, step_id, -1 if item is None else item)
    return {r["call_index"]: r["data"] for r in rows}


async def append_journal(pool: asyncpg.Pool, *, run_id: str, worker_id: str, epoch: int, step_id: str,
                         item: int | None, call_index: int, data: Any) -> bool:
    """Commit one sub-step result if this worker still holds the run at `epoch` (fencing)."""
    row = await pool.fetchval(
        """WITH ok AS (SELECT run_id FROM runs WHERE run_id = $1 AND lease_owner = $2 AND lease_epoch = $3
                       FOR NO KEY UPDATE)
           INSERT INTO step_journal (run_id, step_id, item, call_index, data)
           SELECT run_id, $4, $5, $6, $7 FROM ok
           ON CONFLICT (run_id, step_id, item, call_index) DO UPDATE SET data = EXCLUDED.data
           RETURNING true""",
        run_id, worker_id, epoch, step_id, -1 if item is None else item, call_index, data)
    return bool(row)


async def load_step_decisions(pool: asyncpg.Pool, run_id: str, step_id: str,
                              item: int | None) -> dict[str, dict[str, Any]]:
    """Decided approval tasks that a step raised itself (StepParked), by their key."""
    rows = await pool.fetch(
        """SELECT task_key, task_id::text, status, decided_by, reason, decision FROM human_tasks
           WHERE run_id = $1 AND step_id = $2 AND item IS NOT DISTINCT FROM $3 AND task_key IS NOT NULL
             AND status NOT IN ('pending', 'cancelled')""",
        run_id, step_id, item)
    return {r["task_key"]: {"task_id": r["task_id"], "status": r["status"], "by": r["decided_by"],
                            "reason": r["reason"], "decision": r["decision"]} for r in rows}
