"""Fast death detection: a worker's runs move in about a second after `kill -9`, not after its lease TTL.

While it lives, each worker holds a session-level advisory lock (`LOCK_NS`, hash of its id) on a Postgres
connection of its own, and records since when in `workers.liveness_at`. When its process dies, the kernel closes
that connection and Postgres releases the lock at once. The others' death watch (engine/upkeep.py) looks, every
`DEATH_CHECK_S`, at the workers that hold live leases and have a liveness lock on record; one whose lock it can
take (and give back) is gone: its leases are expired on the spot, it is marked stopped, and the reconciler hands
its runs out immediately. Fencing (lease epochs) stays exactly as strict as before.

What a merely slow worker keeps: a worker frozen by SIGSTOP or a long GC pause still holds its connection, so its
lock is held and nobody takes its runs before its leases expire (the TTL, as before). A worker that loses its
Postgres connection (a network cut, a database restart) loses its lock with it: it cannot commit anything then
either, and is treated as gone; after a database restart every worker needs a moment to take its lock again, so
a worker judges others only once its own lock has been held for two heartbeats.

Needs a session connection. Behind a transaction-mode pooler (AGENTRT_DATABASE_POOLER=transaction) a session lock
taken through the pooler would stay on a pooled server connection after the worker died (and another worker's check
could even share that connection and take it), so it is never taken there: point AGENTRT_LIVENESS_DATABASE_URL at
Postgres directly (one connection per worker), or the worker runs without it, with a warning, and a dead worker's
runs move when their leases expire (AGENTRT_LEASE_TTL), as with AGENTRT_LIVENESS=off. The death watch itself runs
on the pool (through the pooler): its probe is a transaction-scoped lock try inside one transaction.
"""

from __future__ import annotations

import logging
import time

import asyncpg

from worker.config import Settings

logger = logging.getLogger(__name__)

LOCK_NS = 7412
"""First key of the two-int advisory lock (the second is hashtext(worker id))."""
DEATH_CHECK_S = 0.5
"""How often the death watch looks (one small query, and one lock try per worker holding runs)."""


def session_url(settings: Settings) -> str | None:
    """The URL the liveness lock is held on; None when there is none to use (AGENTRT_LIVENESS=off, or a
    transaction pooler and no direct AGENTRT_LIVENESS_DATABASE_URL: then with a warning, since deaths are seen
    only when leases expire)."""
    if not settings.liveness:
        return None
    if settings.liveness_database_url:
        return settings.liveness_database_url
    if settings.database_pooler == "transaction":
        logger.warning(
            "AGENTRT_DATABASE_POOLER=transaction and no AGENTRT_LIVENESS_DATABASE_URL: fast death detection is off "
            "(its session lock cannot go through the pooler); a dead worker's runs move when their leases expire "
            "(%.0fs). Set AGENTRT_LIVENESS_DATABASE_URL to a direct Postgres URL, or AGENTRT_LIVENESS=off to "
            "silence this.", settings.lease_ttl)
        return None
    return settings.database_url


class Liveness:
    """This worker's liveness lock, on a connection of its own (taken again if the connection drops)."""

    def __init__(self, database_url: str, worker_id: str) -> None:
        self.database_url = database_url
        self.worker_id = worker_id
        self._conn: asyncpg.Connection | None = None
        self.held_since: float | None = None
        """time.monotonic() when the lock was (last) taken; None while it is not held."""

    async def hold(self, pool: asyncpg.Pool) -> None:
        """Take the lock if it is not held (a new connection if the old one dropped), and record it."""
        if self._conn is not None and not self._conn.is_closed():
            return
        self.held_since = None
        conn = await asyncpg.connect(self.database_url, timeout=5, statement_cache_size=0,
                                     server_settings={"application_name": f"agentrt-liveness:{self.worker_id}"[:63]})
        try:
            await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", LOCK_NS, self.worker_id)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self.held_since = time.monotonic()
        await pool.execute("UPDATE workers SET liveness_at = now() WHERE worker_id = $1", self.worker_id)
        logger.debug("liveness lock held for %s", self.worker_id)

    def held_for(self) -> float:
        if self._conn is None or self._conn.is_closed() or self.held_since is None:
            return 0.0
        return time.monotonic() - self.held_since

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self.held_since = None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                conn.terminate()


async def dead_workers(pool: asyncpg.Pool, me: str) -> list[str]:
    """Workers that hold live leases, took a liveness lock once, and no longer hold it."""
    # one transaction, and a transaction-scoped probe: through a transaction pooler, a session lock taken by one
    # statement and released by the next could land on two different server connections
    async with pool.acquire() as conn, conn.transaction():
        owners = await conn.fetch(
            """SELECT DISTINCT r.lease_owner FROM runs r JOIN workers w ON w.worker_id = r.lease_owner
                WHERE r.lease_owner IS NOT NULL AND r.lease_owner <> $1 AND r.lease_expires > now()
                  AND w.liveness_at IS NOT NULL AND w.stopped_at IS NULL""", me)
        dead: list[str] = []
        for row in owners:
            owner = row["lease_owner"]
            if await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", LOCK_NS, owner):
                dead.append(owner)  # released at the commit, a moment later
    return dead


async def take_over(pool: asyncpg.Pool, worker_id: str) -> int:
    """A dead worker's leases end now (the reconciler hands its runs out); it is marked stopped."""
    async with pool.acquire() as conn, conn.transaction():
        moved = await conn.fetchval(
            """WITH gone AS (UPDATE runs SET lease_expires = now() - interval '1 millisecond'
                              WHERE lease_owner = $1 AND lease_expires > now() RETURNING 1)
               SELECT count(*) FROM gone""", worker_id)
        await conn.execute("UPDATE workers SET stopped_at = now() WHERE worker_id = $1 AND stopped_at IS NULL",
                           worker_id)
    return int(moved or 0)
