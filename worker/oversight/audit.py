"""The audit trail: append-only (enforced by Postgres triggers), chained by SHA-256 hashes.

Each record's hash covers the previous record's hash and the record's own canonical JSON, so
editing, deleting or inserting a row anywhere breaks the chain from that row on; `verify` finds
the first broken link.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from worker.identity import Identity

GENESIS = "0" * 64
_LOCK = 0x617564  # serialises appends so the chain has one order


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    origin: str | None
    action: str
    outcome: str
    run_id: str | None
    task_id: str | None
    workflow: str | None
    seen: Any
    decision: Any
    reason: str | None
    prev_hash: str
    hash: str


def _canonical(at: datetime, actor: str, origin: str | None, action: str, outcome: str, run_id: str | None,
               task_id: str | None, workflow: str | None, seen: Any, decision: Any, reason: str | None) -> bytes:
    return orjson.dumps({
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"), "actor": actor, "origin": origin,
        "action": action, "outcome": outcome, "run_id": run_id, "task_id": task_id, "workflow": workflow,
        "seen": seen, "decision": decision, "reason": reason,
    }, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical).hexdigest()


async def append_txn(conn: asyncpg.Connection, identity: Identity, action: str, *, outcome: str = "done",
                     run_id: str | None = None, task_id: str | None = None, workflow: str | None = None,
                     seen: Any = None, decision: Any = None, reason: str | None = None) -> str:
    """Append one record inside the caller's transaction (so it commits with the action itself)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
    prev = await conn.fetchval("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1") or GENESIS
    # round-trip through JSON first so that what we hash is exactly what jsonb gives back
    seen = orjson.loads(orjson.dumps(seen, option=orjson.OPT_NON_STR_KEYS))
    decision = orjson.loads(orjson.dumps(decision, option=orjson.OPT_NON_STR_KEYS))
    at = datetime.now(tz=UTC)
    digest = chain_hash(prev, _canonical(at, identity.user, identity.origin, action, outcome, run_id, task_id,
                                         workflow, seen, decision, reason))
    await conn.execute(
        """INSERT INTO audit_log (at, actor, origin, action, outcome, run_id, task_id, workflow, seen, decision,
                                  reason, prev_hash, hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
        at, identity.user, identity.origin, action, outcome, run_id, task_id, workflow, seen, decision, reason,
        prev, digest)
    return digest


async def append(pool: asyncpg.Pool, identity: Identity, action: str, **fields: Any) -> str:
    async with pool.acquire() as conn, conn.transaction():
        return await append_txn(conn, identity, action, **fields)


def _record(r: asyncpg.Record) -> AuditRecord:
    return AuditRecord(r["id"], r["at"], r["actor"], r["origin"], r["action"], r["outcome"],
                       str(r["run_id"]) if r["run_id"] else None, str(r["task_id"]) if r["task_id"] else None,
                       r["workflow"], r["seen"], r["decision"], r["reason"], r["prev_hash"], r["hash"])


async def records(pool: asyncpg.Pool, *, run_id: str | None = None, limit: int = 1000) -> list[AuditRecord]:
    rows = await pool.fetch(
        """SELECT * FROM audit_log WHERE ($1::uuid IS NULL OR run_id = $1) ORDER BY id DESC LIMIT $2""",
        run_id, limit)
    return [_record(r) for r in reversed(rows)]


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    checked: int
    broken_at: int | None = None
    reason: str | None = None


async def verify(pool: asyncpg.Pool, batch: int = 5000) -> Verification:
    """Walk the whole chain in id order and recompute every hash."""
    prev = GENESIS
    checked = 0
    last_id = 0
    while True:
        rows = await pool.fetch("SELECT * FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2", last_id, batch)
        if not rows:
            return Verification(True, checked)
        for row in rows:
            r = _record(row)
            if r.prev_hash != prev:
                return Verification(False, checked, r.id, f"record {r.id} does not follow record before it "
                                                         "(a row was inserted, deleted or reordered)")
            expected = chain_hash(prev, _canonical(r.at, r.actor, r.origin, r.action, r.outcome, r.run_id,
                                                   r.task_id, r.workflow, r.seen, r.decision, r.reason))
            if expected != r.hash:
                return Verification(False, checked, r.id, f"record {r.id} was altered (hash mismatch)")
            prev = r.hash
            checked += 1
            last_id = r.id
