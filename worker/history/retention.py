"""Retention by partition: a day of history goes as one `DROP TABLE`, not as millions of row deletes.

Run history (`events`, by the day a run's history began; `agentrt gc`, worker/ops/gc.py): a day's partition is
due once it ends before the cutoff. Its runs are sorted in batches, each in one transaction holding their tree's
rows (FOR UPDATE, as gc's row path does):
- a run whose whole tree (parent chain and children, as `agentrt gc` defines it) finished before the cutoff is
  deleted: its row (and human tasks, journal, spend, by their foreign keys), and, for a tree member whose history
  lives in another partition, that member's events;
- every other run of the day (still active, finished recently, or in such a tree) is MOVED: its `history_at` and
  its events go to today's partition (an UPDATE of the partition key; Postgres moves the rows). A worker
  appending to that run at the same moment waits on the run's row lock and then writes where the run now points.
Then, with no run left pointing into it, the partition is detached CONCURRENTLY (inserts and reads go on) and
dropped. A detach interrupted half-way is finished on the next pass (DETACH ... FINALIZE).

Telemetry (`spans` by created_at, `step_logs` by ts; the worker's prune): a day is dropped whole once it ended
before now minus the retention; the legacy table (from before partitioning) is pruned row by row, as before,
until all of it is past the retention and it is dropped too.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from worker.history.partitions import Partition, ensure, list_partitions

logger = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "cancelled")
BATCH = 2000
LOCK_TIMEOUT = "5s"
"""How long a detach or a move waits for a lock before giving up until the next pass."""


@dataclass(slots=True)
class PartitionSummary:
    dropped: list[str] = field(default_factory=list)
    """Partitions dropped (or, in a dry run, that would be)."""
    runs: int = 0
    """Runs deleted with them."""
    events: int = 0
    """Events of those runs."""
    tasks: int = 0
    journal: int = 0
    trees: int = 0
    """Run trees deleted (a run and its child runs)."""
    kept_trees: int = 0
    """Trees with an old finished root kept because a member is active or finished after the cutoff."""
    pending: list[str] = field(default_factory=list)
    """Days emptied whose detach still waits for older transactions (finished by the next pass)."""
    moved: int = 0
    """Runs still alive (or in a tree that is) moved from a due partition to today's."""


_TREES_SQL = """
WITH RECURSIVE up AS (
    SELECT run_id, parent_run_id FROM runs WHERE run_id = ANY($1::uuid[])
    UNION
    SELECT r.run_id, r.parent_run_id FROM runs r JOIN up ON r.run_id = up.parent_run_id),
down AS (
    SELECT run_id AS root, run_id FROM up WHERE parent_run_id IS NULL
    UNION
    SELECT down.root, r.run_id FROM runs r JOIN down ON r.parent_run_id = down.run_id)
SELECT down.root, r.run_id, r.status, r.finished_at, nullif(r.history_at, '-infinity') AS history_at
FROM down JOIN runs r ON r.run_id = down.run_id
ORDER BY r.run_id
FOR UPDATE OF r
"""


_IN_DAY = "history_at >= $1 AND history_at < $2 AND history_at > '-infinity'"
"""Runs whose history is in the day [$1, $2); the last term lets a generic plan use runs_history_idx (partial)."""

COUNTS_SQL = """
-- the events, human tasks and journal entries of runs $1 (their events read from each run's own partition:
-- counted per run, a subquery pruned to that run's partition when it runs; a join of events and runs on
-- history_at cannot be pruned and hash-joined every partition, ~3 s a batch at 1M runs, bench/scale.py)
SELECT (SELECT coalesce(sum((SELECT count(*) FROM events e
                             WHERE e.run_id = r.run_id AND e.history_at = r.history_at)), 0)::bigint
        FROM runs r WHERE r.run_id = ANY($1::uuid[])) AS events,
       (SELECT count(*) FROM human_tasks WHERE run_id = ANY($1::uuid[])) AS tasks,
       (SELECT count(*) FROM step_journal WHERE run_id = ANY($1::uuid[])) AS journal
"""


async def drop_run_history(pool: asyncpg.Pool, cutoff: datetime, *, dry_run: bool = False) -> PartitionSummary:
    """Drop every daily partition of `events` that ended before `cutoff`, with its runs; see the module doc."""
    summary = PartitionSummary()
    await ensure(pool)  # today's partition receives the moved runs
    today = await pool.fetchval("SELECT date_trunc('day', now(), 'UTC')")
    for part in await list_partitions(pool, "events"):
        if part.legacy or part.hi > cutoff or part.hi > today:
            continue
        if part.detach_pending:
            if not dry_run:
                (summary.dropped if await _finish_detach(pool, part) else summary.pending).append(part.name)
            continue
        if not await _empty_partition_of_runs(pool, part, cutoff, today, dry_run, summary):
            continue  # dry run: it would be dropped only once the moves are done; counted
        if dry_run or await _detach_and_drop(pool, part):
            summary.dropped.append(part.name)
        else:
            summary.pending.append(part.name)
    return summary


async def _empty_partition_of_runs(pool: asyncpg.Pool, part: Partition, cutoff: datetime, today: datetime,
                                   dry_run: bool, summary: PartitionSummary) -> bool:
    """Delete or move every run whose history is in `part`, a batch per transaction; True when none is left (in a
    dry run: counts, and True)."""
    after = uuid.UUID(int=0)
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            ids = [r["run_id"] for r in await conn.fetch(
                f"""SELECT run_id FROM runs WHERE {_IN_DAY} AND run_id > $3 ORDER BY run_id LIMIT $4""",
                part.lo, part.hi, after, BATCH)]
            if not ids:
                break
            after = ids[-1]
            rows = await conn.fetch(_TREES_SQL, ids)
            trees: dict[uuid.UUID, list[asyncpg.Record]] = {}
            for r in rows:
                trees.setdefault(r["root"], []).append(r)
            doomed: list[uuid.UUID] = []
            elsewhere: list[tuple[uuid.UUID, datetime | None]] = []
            keep: list[uuid.UUID] = []
            for root, members in trees.items():
                if all(old_and_finished(m, cutoff) for m in members):
                    doomed.extend(m["run_id"] for m in members)
                    elsewhere.extend((m["run_id"], m["history_at"]) for m in members
                                     if not _inside(m["history_at"], part))
                    summary.trees += 1
                else:
                    keep.extend(m["run_id"] for m in members if _inside(m["history_at"], part))
                    head = next(m for m in members if m["run_id"] == root)
                    summary.kept_trees += old_and_finished(head, cutoff) and _inside(head["history_at"], part)
            summary.runs += len(doomed)
            summary.moved += len(keep)
            if doomed:
                counts = await conn.fetchrow(COUNTS_SQL, doomed)
                summary.events += counts["events"]
                summary.tasks += counts["tasks"]
                summary.journal += counts["journal"]
            if dry_run:
                continue
            if keep:
                await conn.execute("UPDATE runs SET history_at = $2 WHERE run_id = ANY($1::uuid[])", keep, today)
                await conn.execute(
                    """UPDATE events SET history_at = $4
                       WHERE history_at >= $2 AND history_at < $3 AND run_id = ANY($1::uuid[])""",
                    keep, part.lo, part.hi, today)
            await delete_events(conn, elsewhere)
            if doomed:
                await conn.execute("DELETE FROM runs WHERE run_id = ANY($1::uuid[])", doomed)
        if len(ids) < BATCH:
            break
    if dry_run:
        return True
    left = await pool.fetchval(f"SELECT count(*) FROM runs WHERE {_IN_DAY}", part.lo, part.hi)
    if left:
        logger.warning("history: %s keeps %d runs (created meanwhile?); it is dropped on a later pass",
                       part.name, left)
    return not left


async def delete_events(conn: asyncpg.Connection, runs: list[tuple[uuid.UUID, datetime | None]]) -> None:
    """Delete the events of runs given as (run id, history_at; None for the legacy partition) where no
    partition goes with them: a statement per history day, the day a value (so Postgres reads that partition
    only). The legacy partition's foreign key deletes its runs' events with their rows: those are skipped."""
    by_day: dict[datetime, list[uuid.UUID]] = {}
    for run_id, at in runs:
        if at is not None:
            by_day.setdefault(at, []).append(run_id)
    for at, ids in by_day.items():
        await conn.execute("DELETE FROM events WHERE history_at = $2 AND run_id = ANY($1::uuid[])", ids, at)


def old_and_finished(run: asyncpg.Record, cutoff: datetime) -> bool:
    """Finished (completed, failed, cancelled) before the cutoff: what `agentrt gc` may delete, tree permitting."""
    return run["status"] in TERMINAL and run["finished_at"] is not None and run["finished_at"] < cutoff


def _inside(at: datetime | None, part: Partition) -> bool:
    """Whether a run's history (None: the legacy partition) is in the day `part`."""
    return at is not None and part.lo is not None and part.lo <= at < part.hi


DETACH_WAIT = 120.0
"""How long a detach may wait for older transactions. DETACH ... CONCURRENTLY blocks no insert or read, but it
waits until every transaction that used `events` before it began has ended (an analyst's hour-long query over
all history, a session left idle in a transaction after reading it). Past this it is cancelled: the partition
stays "detach pending" (no new query sees it, it holds no run) and the next pass finishes it (DETACH ...
FINALIZE)."""


async def _detach_and_drop(pool: asyncpg.Pool, part: Partition) -> bool:
    """DETACH CONCURRENTLY (its own transactions; blocks no insert), then DROP; False when it is left pending."""
    return await _detach(pool, part, "CONCURRENTLY")


async def _finish_detach(pool: asyncpg.Pool, part: Partition) -> bool:
    return await _detach(pool, part, "FINALIZE")


async def _detach(pool: asyncpg.Pool, part: Partition, how: str) -> bool:
    async with pool.acquire() as conn:
        try:
            await conn.execute(f'ALTER TABLE "{part.parent}" DETACH PARTITION "{part.name}" {how}',
                               timeout=DETACH_WAIT)
        except (asyncpg.PostgresError, TimeoutError) as exc:
            reason = (f"still waiting after {DETACH_WAIT:g} s for transactions older than it to end"
                      if isinstance(exc, TimeoutError) else str(exc))
            logger.warning("history: detaching %s: %s; it is finished on the next pass", part.name, reason)
            return False
        await conn.execute(f'DROP TABLE "{part.name}"')
    logger.info("history: dropped %s", part.name)
    return True


@dataclass(slots=True)
class TelemetryPrune:
    spans: int = 0
    logs: int = 0
    dropped: list[str] = field(default_factory=list)


async def prune_telemetry(pool: asyncpg.Pool, *, span_retention_s: float, log_retention_s: float,
                          batch: int = 5000, now: datetime | None = None) -> TelemetryPrune:
    """Drop the days of spans and step logs past their retention; prune the legacy tables row by row. `now`:
    the database's clock unless given."""
    out = TelemetryPrune()
    now = now or await pool.fetchval("SELECT now()")
    for parent, retention, time_col in (("spans", span_retention_s, "created_at"),
                                        ("step_logs", log_retention_s, "ts")):
        cutoff = await pool.fetchval("SELECT $1::timestamptz - make_interval(secs => $2)", now, retention)
        for part in await list_partitions(pool, parent):
            if part.detach_pending:
                if await _finish_detach(pool, part):
                    out.dropped.append(part.name)
            elif part.hi <= cutoff:
                if await _detach_and_drop(pool, part):
                    out.dropped.append(part.name)
            elif part.legacy:
                gone = int(await pool.fetchval(
                    f"""WITH gone AS (DELETE FROM "{part.name}" WHERE ctid = ANY(ARRAY(
                           SELECT ctid FROM "{part.name}" WHERE {time_col} < $1 LIMIT $2)) RETURNING 1)
                        SELECT count(*) FROM gone""", cutoff, batch) or 0)
                if parent == "spans":
                    out.spans += gone
                else:
                    out.logs += gone
    return out
