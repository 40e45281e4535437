"""`agentrt gc`: delete finished runs older than a cutoff, in batches.

A run and its child runs (`workflow` steps) form a tree; a tree is deleted as a unit, and only when
every run in it is finished (completed, failed or cancelled) and finished before the cutoff. So an
active run never loses its parent or its children, and `agentrt show` never shows a dangling link.
Deleting a run deletes its events, human tasks, step journal and LLM spend (ON DELETE CASCADE).

Each batch runs in one transaction that locks the tree's rows (and any child row pointing at them)
and checks them again, so a run that a replay or a late child brought back to life is left alone.

Runs whose history is in a daily partition of `events` (every run created since migration 0018) go with their
partition: first, every day that ended before the cutoff is emptied (its deletable runs deleted, its others moved
to today's partition) and dropped whole (worker/history/retention.py). The row-by-row path below then handles the
runs from before partitioning (the legacy partition) only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from worker.definitions.schema import parse_duration
from worker.history.retention import COUNTS_SQL, delete_events, drop_run_history, old_and_finished

logger = logging.getLogger(__name__)

_MIN_UUID = uuid.UUID(int=0)


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w` (weeks) or seconds; at least one minute (a typo must not wipe today)."""
    text = text.strip()
    seconds = float(text[:-1]) * 7 * 86400 if text.endswith("w") and text[:-1].isdigit() else parse_duration(text)
    if seconds < 60:
        raise ValueError(f"--older-than {text!r} is under a minute; give e.g. 30d")
    return timedelta(seconds=seconds)


@dataclass(slots=True)
class GcSummary:
    cutoff: datetime
    dry_run: bool
    runs: int = 0
    events: int = 0
    tasks: int = 0
    journal: int = 0
    trees: int = 0
    kept_trees: int = 0
    """Old finished runs kept because a run in their tree is still active or finished recently."""
    batches: int = 0
    workflow_events: int = 0
    external_events: int = 0  # events sent from outside (their delivery records, the `wait` lookback window)
    workers: int = 0
    notifications: int = 0  # delivered or given-up worker.lost notifications (the others go with their run)
    partitions: list[str] = field(default_factory=list)
    """Daily partitions of `events` dropped (or that would be) with their runs."""
    pending: list[str] = field(default_factory=list)
    """Days emptied whose detach waits for older transactions (the next gc finishes them)."""
    moved: int = 0
    """Runs of those days still active (or whose tree is) moved to today's partition instead."""
    deleted_ids: list[str] = field(default_factory=list, repr=False)


# Candidate roots: top-level finished runs, oldest first, after the keyset cursor (created_at, run_id).
# created_at < cutoff is implied by finished_at < cutoff and lets the scan use runs_created_idx.
_BATCH_SQL = """
WITH RECURSIVE roots AS (
    SELECT run_id, created_at FROM runs
    WHERE parent_run_id IS NULL AND created_at < $1 AND (created_at, run_id) > ($2, $3)
      AND history_at < '2000-01-01+00'
      AND status IN ('completed', 'failed', 'cancelled') AND finished_at < $1
    ORDER BY created_at, run_id LIMIT $4),
tree AS (
    SELECT run_id AS root, run_id FROM roots
    UNION ALL
    SELECT tree.root, r.run_id FROM runs r JOIN tree ON r.parent_run_id = tree.run_id)
SELECT roots.run_id AS root, roots.created_at, array_agg(tree.run_id) AS ids
FROM roots JOIN tree ON tree.root = roots.run_id
GROUP BY roots.run_id, roots.created_at
ORDER BY roots.created_at, roots.run_id
"""


async def _settle_batch_txn(conn: asyncpg.Connection, trees: dict[uuid.UUID, list[uuid.UUID]], cutoff: datetime,
                            dry_run: bool, summary: GcSummary) -> None:
    """Lock the candidate trees, check them again, count and (unless dry run) delete the eligible ones."""
    all_ids = [i for ids in trees.values() for i in ids]
    # Lock every member and every row pointing at a member (a child created since the scan).
    rows = await conn.fetch(
        """SELECT run_id, parent_run_id, status, finished_at, nullif(history_at, '-infinity') AS history_at FROM runs
           WHERE run_id = ANY($1::uuid[]) OR parent_run_id = ANY($1::uuid[])
           ORDER BY run_id FOR UPDATE""", all_ids)
    by_id = {r["run_id"]: r for r in rows}
    children: dict[uuid.UUID, list[uuid.UUID]] = {}
    for r in rows:
        if r["parent_run_id"] is not None:
            children.setdefault(r["parent_run_id"], []).append(r["run_id"])
    doomed: list[uuid.UUID] = []
    for root in trees:
        members, stack, ok = [], [root], True
        while stack:
            rid = stack.pop()
            row = by_id.get(rid)
            if row is None:  # deleted meanwhile (another gc running at the same time): leave it to that one
                ok = False
                break
            if not old_and_finished(row, cutoff):
                ok = False
                break
            members.append(rid)
            stack.extend(children.get(rid, []))
        if ok:
            doomed.extend(members)
            summary.trees += 1
        else:
            summary.kept_trees += 1
    if not doomed:
        return
    counts = await conn.fetchrow(COUNTS_SQL, doomed)
    if not dry_run:
        # Events of the legacy partition go by its foreign key; a member created since partitioning (a child)
        # has its events in a daily partition, which has none.
        await delete_events(conn, [(i, by_id[i]["history_at"]) for i in doomed])
        # One statement: the self-referencing foreign key is checked at its end, so parents and
        # children go together.
        await conn.execute("DELETE FROM runs WHERE run_id = ANY($1::uuid[])", doomed)
    summary.runs += len(doomed)
    summary.events += counts["events"]
    summary.tasks += counts["tasks"]
    summary.journal += counts["journal"]
    summary.deleted_ids.extend(str(i) for i in doomed)


async def collect(pool: asyncpg.Pool, older_than: timedelta, *, dry_run: bool = False, batch_size: int = 500,
                  progress: Callable[[GcSummary], None] | None = None,
                  now: datetime | None = None) -> GcSummary:
    """Delete (or, with `dry_run`, count) finished run trees older than `older_than`; see the module doc."""
    cutoff = (now or datetime.now(tz=UTC)) - older_than
    summary = GcSummary(cutoff=cutoff, dry_run=dry_run)
    by_partition = await drop_run_history(pool, cutoff, dry_run=dry_run)
    summary.partitions, summary.pending, summary.moved = by_partition.dropped, by_partition.pending, by_partition.moved
    for name in ("runs", "events", "tasks", "journal", "trees", "kept_trees"):  # the counts both paths keep
        setattr(summary, name, getattr(summary, name) + getattr(by_partition, name))
    if progress is not None and by_partition.dropped:
        progress(summary)
    cursor: tuple[datetime, uuid.UUID] = (datetime.min.replace(tzinfo=UTC), _MIN_UUID)
    while True:
        async with pool.acquire() as conn, conn.transaction():
            found = await conn.fetch(_BATCH_SQL, cutoff, cursor[0], cursor[1], batch_size)
            if not found:
                break
            cursor = (found[-1]["created_at"], found[-1]["root"])
            trees = {r["root"]: list(r["ids"]) for r in found}
            await _settle_batch_txn(conn, trees, cutoff, dry_run, summary)
        summary.batches += 1
        if progress is not None:
            progress(summary)
        if len(found) < batch_size:
            break
    async with pool.acquire() as conn, conn.transaction():
        if dry_run:
            summary.workflow_events = await conn.fetchval(
                "SELECT count(*) FROM workflow_events WHERE at < $1", cutoff)
            summary.workers = await conn.fetchval(
                "SELECT count(*) FROM workers WHERE stopped_at < $1 OR heartbeat_at < $1", cutoff)
            summary.external_events = await conn.fetchval(
                "SELECT count(*) FROM external_events WHERE received_at < $1", cutoff)
            summary.notifications = await conn.fetchval(
                "SELECT count(*) FROM notifications WHERE run_id IS NULL AND finished_at < $1", cutoff)
        else:
            summary.workflow_events = _rowcount(await conn.execute(
                "DELETE FROM workflow_events WHERE at < $1", cutoff))
            summary.workers = _rowcount(await conn.execute(
                "DELETE FROM workers WHERE stopped_at < $1 OR heartbeat_at < $1", cutoff))
            summary.external_events = _rowcount(await conn.execute(
                "DELETE FROM external_events WHERE received_at < $1", cutoff))
            summary.notifications = _rowcount(await conn.execute(
                "DELETE FROM notifications WHERE run_id IS NULL AND finished_at < $1", cutoff))
    logger.info("gc: %s %d runs older than %s", "would delete" if dry_run else "deleted", summary.runs, cutoff)
    return summary


def _rowcount(status: str) -> int:
    """The row count of an asyncpg command status such as 'DELETE 12'."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
