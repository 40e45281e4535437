"""The daily partitions of `events`, `spans` and `step_logs`: create ahead, list with bounds."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

logger = logging.getLogger(__name__)

AHEAD_DAYS = 7
"""Days of partitions kept ready beyond today: a worker (or `agentrt gc`) must run at least once a week, or new
history has nowhere to go (inserts fail with "no partition of relation ... found for row"; the next worker start
creates them again)."""

HISTORY_TABLES = ("events", "spans", "step_logs")


@dataclass(frozen=True, slots=True)
class Partition:
    parent: str
    name: str
    lo: datetime | None
    """Inclusive lower bound; None for MINVALUE (the legacy partition)."""
    hi: datetime
    """Exclusive upper bound."""
    detach_pending: bool = False

    @property
    def legacy(self) -> bool:
        """The table from before partitioning, attached as the first partition."""
        return self.lo is None


async def ensure(conn: asyncpg.Connection | asyncpg.Pool, ahead_days: int = AHEAD_DAYS) -> int:
    """Create the missing daily partitions from today (UTC) to `ahead_days` ahead; how many were made."""
    made = int(await conn.fetchval("SELECT agentrt_ensure_partitions($1)", ahead_days) or 0)
    if made:
        logger.info("history: created %d daily partitions", made)
    return made


_LIST_SQL = """
SELECT c.relname AS name, i.inhdetachpending AS pending,
       CASE WHEN b[1] = 'MINVALUE' THEN NULL ELSE btrim(b[1], '''')::timestamptz END AS lo,
       btrim(b[2], '''')::timestamptz AS hi
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,
     LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\((.*)\\) TO \\((.*)\\)') AS b
WHERE i.inhparent = $1::regclass AND c.relkind = 'r'
ORDER BY lo NULLS FIRST
"""


async def list_partitions(conn: asyncpg.Connection | asyncpg.Pool, parent: str) -> list[Partition]:
    """The partitions of `parent`, oldest first (the legacy one first), in one catalog query."""
    if parent not in HISTORY_TABLES:
        raise ValueError(f"not a history table: {parent!r}")
    return [Partition(parent, r["name"], r["lo"], r["hi"], bool(r["pending"]))
            for r in await conn.fetch(_LIST_SQL, parent)]
