"""Concurrency keys in Postgres: admission, release and the queue of each (workflow, key).

A run of a workflow with `concurrency: {key, limit, on_full}` carries its rendered key, its version's limit
and an `admit_seq` (creation order). It is *admitted* (status pending, then running or waiting) while fewer
than `limit` runs of its key are admitted, else it waits in status `queued`. The runs themselves are the
count: there is no table of slots to drift from them. A slot belongs to the run, not to a worker: a dead
worker's runs stay admitted and are resumed elsewhere when their leases expire.

Exactness: every transaction that admits, queues or releases runs of a key first takes a transaction-scoped
advisory lock on (workflow, key) (`lock_txn`), then counts in a new statement, so it sees every transaction
that held the lock before it. No session lock is ever taken (a transaction-mode pooler keeps working).

- Creating a run (`admit_txn`, called by `insert_run_txn`): the run is inserted `queued`, `on_full` is
  applied (cancel_newest: the new run is cancelled at once when the key is full; cancel_oldest: the oldest
  admitted run not already being cancelled is asked to cancel, audited as `system:concurrency`, or, when all
  are, the oldest queued run is cancelled), then the queue is promoted.
- A run's end (the event writer, worker/store/writer.py) commits in the transaction that promotes the queue
  of its key (`promote_txn`): the next queued runs become `pending` then, and are put on the work stream
  after the commit.
- Promotion takes queued runs in order (priority high, normal, low; then admit_seq) while the key has room
  under each one's limit; it never skips ahead of a run that does not fit.
- `repair` promotes keys that have room but queued runs (a version that raised the limit; rows edited by
  hand): the reconciler calls it now and then.

Lock order, everywhere: wait locks (worker/store/waits.py), then concurrency keys (sorted by lock id), then
run rows, then the audit log's lock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import asyncpg

from worker.identity import Identity
from worker.models import QueueInfo
from worker.runlog import RUN_CANCELLED


def rank(table: str = "") -> str:
    """SQL: the priority's place in a key's queue (the expression of runs_concurrency_queue_idx)."""
    column = f"{table}.priority" if table else "priority"
    return f"CASE {column} WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END"


RANK = rank()
ADMITTED = "('pending', 'running', 'waiting', 'paused')"
"""Statuses that hold a slot of their key (a paused run keeps its slot)."""
SYSTEM = Identity(user="system:concurrency")
"""Who cancels a run for `on_full: cancel_oldest` in the audit trail."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What a new run brings to its admission (worker/engine/admission.py computes it)."""

    priority: str | None = None
    """high | normal | low; None: its parent's priority (a child run), else normal."""
    key: str | None = None
    """The rendered concurrency key; None: the workflow has none (the run is admitted at once)."""
    limit: int = 0
    on_full: str = "queue"


@dataclass(slots=True)
class Admitted:
    """What creating a run did: its status, and what must be told to the workers after the commit."""

    status: str
    """pending | queued | cancelled."""
    priority: str = "normal"
    wake: list[tuple[str, str]] = field(default_factory=list)
    """(run id, priority) of runs made startable: the new run when pending, and queued runs promoted."""
    signal: list[str] = field(default_factory=list)
    """Runs asked to cancel (cancel_oldest): the worker driving one learns it from a signal."""
    reason: str | None = None
    """Why the new run was cancelled at once (cancel_newest)."""


def lock_id(workflow: str, key: str) -> int:
    digest = hashlib.blake2b("\x1f".join(("agentrt.concurrency", workflow, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_txn(conn: asyncpg.Connection, keys: set[tuple[str, str]] | list[tuple[str, str]]) -> None:
    """Take the locks of these (workflow, key) pairs, sorted, in one statement (held until the transaction ends)."""
    ids = sorted({lock_id(w, k) for w, k in keys})
    if ids:
        await conn.fetchval("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS t(k)", ids)


async def promote_txn(conn: asyncpg.Connection, workflow: str, key: str) -> list[tuple[str, str]]:
    """Admit the key's queued runs that fit, in order; (run id, priority) of each. Hold the key's lock."""
    rows = await conn.fetch(
        f"""WITH active AS (SELECT count(*) AS n FROM runs
                            WHERE workflow = $1 AND concurrency_key = $2 AND status IN {ADMITTED})
            SELECT q.run_id::text, q.priority, q.concurrency_limit, active.n FROM active, LATERAL (
                SELECT run_id, priority, concurrency_limit FROM runs
                 WHERE workflow = $1 AND concurrency_key = $2 AND status = 'queued'
                 ORDER BY {RANK}, admit_seq LIMIT 1000) q""",
        workflow, key)
    if not rows:
        return []
    active = rows[0]["n"]
    chosen: list[tuple[str, str]] = []
    for r in rows:
        if active >= (r["concurrency_limit"] or 1):
            break
        chosen.append((r["run_id"], r["priority"]))
        active += 1
    if chosen:
        await conn.execute(
            """UPDATE runs SET status = 'pending', enqueued_at = now(), updated_at = now()
               WHERE run_id = ANY($1::uuid[]) AND status = 'queued'""", [run_id for run_id, _ in chosen])
    return chosen


async def cancel_queued_txn(conn: asyncpg.Connection, run_id: str, reason: str) -> bool:
    """End a queued run (no worker holds one): `cancelled`, with its run.cancelled event. Hold its key's lock.
    False when it is not queued (any more)."""
    row = await conn.fetchrow(
        """UPDATE runs SET status = 'cancelled', finished_at = now(), updated_at = now(), error = $2,
                  cancel_requested = true, cancel_reason = $2, enqueued_at = NULL, next_seq = next_seq + 1
           WHERE run_id = $1 AND status = 'queued'
           RETURNING next_seq - 1 AS seq, parent_run_id""", run_id, reason)
    if row is None:
        return False
    await conn.execute("""INSERT INTO events (run_id, seq, ts, type, data, history_at)
                          SELECT $1, $2, now(), $3, $4, history_at FROM runs WHERE run_id = $1""",
                       run_id, row["seq"], RUN_CANCELLED, {"reason": reason})
    if row["parent_run_id"] is not None:  # the parent's child step learns it like any child's end
        await conn.execute("UPDATE runs SET signal_version = signal_version + 1 WHERE run_id = $1",
                           row["parent_run_id"])
    return True


async def admit_txn(conn: asyncpg.Connection, run_id: str, workflow: str, adm: Admission, *,
                    priority: str) -> Admitted:
    """Admit or queue a run just inserted as `queued` (see the module doc). Hold the key's lock."""
    assert adm.key is not None
    key, limit = adm.key, adm.limit
    result = Admitted("queued", priority)
    if adm.on_full != "queue":
        counts = await conn.fetchrow(
            f"""SELECT (SELECT count(*) FROM runs WHERE workflow = $1 AND concurrency_key = $2
                          AND status IN {ADMITTED}) AS admitted,
                       (SELECT count(*) FROM runs WHERE workflow = $1 AND concurrency_key = $2
                          AND status IN {ADMITTED} AND NOT cancel_requested) AS live,
                       (SELECT count(*) FROM runs WHERE workflow = $1 AND concurrency_key = $2
                          AND status = 'queued' AND run_id <> $3) AS queued""",
            workflow, key, run_id)
        if adm.on_full == "cancel_newest" and counts["admitted"] + counts["queued"] >= limit:
            reason = (f"concurrency key {key!r} of {workflow} is full ({counts['admitted']} active, limit {limit}; "
                      "on_full: cancel_newest)")
            await cancel_queued_txn(conn, run_id, reason)
            result.status, result.reason = "cancelled", reason
            return result
        if adm.on_full == "cancel_oldest" and counts["live"] + counts["queued"] >= limit:
            await _cancel_oldest(conn, run_id, workflow, key, limit, result)
    for promoted in await promote_txn(conn, workflow, key):
        result.wake.append(promoted)
        if promoted[0] == run_id:
            result.status = "pending"
    return result


async def _cancel_oldest(conn: asyncpg.Connection, run_id: str, workflow: str, key: str, limit: int,
                         result: Admitted) -> None:
    """Make room for `run_id`: the oldest admitted run not being cancelled yet is asked to cancel (its slot is
    free once its end commits); when every admitted run is, the oldest other queued run is cancelled."""
    from worker.oversight import audit  # local: oversight's modules import the store

    victim = await conn.fetchrow(
        f"""SELECT run_id::text, status FROM runs
            WHERE workflow = $1 AND concurrency_key = $2 AND run_id <> $3
              AND ((status IN {ADMITTED} AND NOT cancel_requested) OR status = 'queued')
            ORDER BY status = 'queued', admit_seq LIMIT 1""", workflow, key, run_id)
    if victim is None:
        return
    reason = f"on_full: cancel_oldest: run {run_id} of concurrency key {key!r} (limit {limit}) takes its place"
    if victim["status"] == "queued":
        await cancel_queued_txn(conn, victim["run_id"], f"cancelled by {SYSTEM.user}: {reason}")
    else:
        await conn.execute(
            """UPDATE runs SET cancel_requested = true, cancel_reason = $2, signal_version = signal_version + 1,
                      updated_at = now()
               WHERE run_id = $1""", victim["run_id"], f"cancelled by {SYSTEM.user}: {reason}")
        result.signal.append(victim["run_id"])
    await audit.append_txn(conn, SYSTEM, "cancel", run_id=victim["run_id"], workflow=workflow,
                           seen={"status": victim["status"], "concurrency_key": key, "limit": limit},
                           decision={"new_run": run_id}, reason=reason)


async def queue_position(pool: asyncpg.Pool | asyncpg.Connection, run_id: str) -> QueueInfo | None:
    """Where a queued run stands in its key's queue (None when it is not queued)."""
    row = await pool.fetchrow(
        f"""SELECT r.concurrency_key, r.concurrency_limit,
                   (SELECT count(*) FROM runs q WHERE q.workflow = r.workflow AND q.concurrency_key = r.concurrency_key
                       AND q.status = 'queued'
                       AND ({rank('q')}, q.admit_seq) < ({rank('r')}, r.admit_seq)) AS ahead,
                   (SELECT count(*) FROM runs a WHERE a.workflow = r.workflow AND a.concurrency_key = r.concurrency_key
                       AND a.status IN {ADMITTED}) AS active
            FROM runs r WHERE r.run_id = $1 AND r.status = 'queued' AND r.concurrency_key IS NOT NULL""", run_id)
    if row is None:
        return None
    return QueueInfo(row["concurrency_key"], row["concurrency_limit"] or 1, row["ahead"], row["active"])


async def repair(pool: asyncpg.Pool, max_keys: int = 100) -> list[tuple[str, str]]:
    """Promote keys whose queue could move but did not (their head fits under its limit); (run id, priority)
    of the runs admitted. Cheap when nothing is queued (the queue index is empty)."""
    keys = await pool.fetch(
        f"""SELECT h.workflow, h.concurrency_key FROM (
                SELECT DISTINCT ON (workflow, concurrency_key) workflow, concurrency_key, concurrency_limit
                  FROM runs WHERE status = 'queued' AND concurrency_key IS NOT NULL
                 ORDER BY workflow, concurrency_key, {RANK}, admit_seq) h
            WHERE (SELECT count(*) FROM runs a WHERE a.workflow = h.workflow AND a.concurrency_key = h.concurrency_key
                     AND a.status IN {ADMITTED}) < coalesce(h.concurrency_limit, 1)
            LIMIT $1""", max_keys)
    woken: list[tuple[str, str]] = []
    for k in keys:
        async with pool.acquire() as conn, conn.transaction():
            await lock_txn(conn, [(k["workflow"], k["concurrency_key"])])
            woken += await promote_txn(conn, k["workflow"], k["concurrency_key"])
    return woken
