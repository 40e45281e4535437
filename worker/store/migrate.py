"""Schema migrations: numbered SQL files applied once each, each in one transaction under an advisory lock.

The lock is transaction-scoped (`pg_advisory_xact_lock`), taken again in every migration's own transaction:
a session-level lock would, behind a transaction-mode pooler (PgBouncer), be taken on one server connection
and released on another, or stay held on a pooled connection for ever. Holding it per transaction keeps the
guarantee that matters: each migration is applied exactly once, in order, however many workers and
`agentrt migrate` calls start at once, since whoever waits for the lock re-checks `schema_migrations` under it.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

from worker.errors import StoreError

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x6167656E74  # "agent": one migrator at a time across workers


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every bundled migration, in order."""
    folder = resources.files("worker.store") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name, p.read_text(encoding="utf-8")) for p in files]


async def migrate_conn(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations on an open connection (direct or through a transaction pooler); returns the
    names applied."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    # read without the lock (a started worker usually finds nothing to do); re-checked under it
    done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
    for name, sql in migration_files():
        if name in done:
            continue
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            if await conn.fetchval("SELECT 1 FROM schema_migrations WHERE name = $1", name):
                continue  # another migrator applied it while we waited for the lock
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        logger.info("applied migration %s", name)
        applied.append(name)
    return applied


async def migrate(dsn: str, *, pooler: str | None = None) -> list[str]:
    """Connect to `dsn` and apply pending migrations. `pooler`: None reads AGENTRT_DATABASE_POOLER."""
    from worker.store.pool import connect_error, connect_options  # pool imports this module

    try:
        conn = await asyncpg.connect(dsn, timeout=15, **connect_options(pooler))
    except (OSError, asyncpg.PostgresError) as exc:
        raise connect_error(dsn, exc) from exc
    try:
        return await migrate_conn(conn)
    except asyncpg.PostgresError as exc:
        raise StoreError(f"migration failed: {exc}") from exc
    finally:
        await conn.close()


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
