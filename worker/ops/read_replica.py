"""`agentrt doctor`, the read replica (AGENTRT_DATABASE_READ_URL): reachable, a replica, the schema there, its lag.

A finding of the Postgres check, not a check of its own: the workers never use the read URL (only the CLI,
the console and the API read through it), so a broken replica warns, it never fails the workers' healthcheck.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from worker.client.replica import replica_lag
from worker.store.migrate import redact_dsn
from worker.store.pool import connect_options

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.ops.check import Check

LAG_WARN_S = 30.0
"""A replica further behind than this shows listings stale enough to mislead: a warning."""


async def check_read_replica(settings: Settings, c: Check, connect_timeout: float) -> None:
    """Add the read replica's findings to the Postgres check `c` (nothing without a read URL)."""
    url = settings.database_read_url
    if not url:
        return
    where = redact_dsn(url)
    c.facts["read_replica_url"] = where
    try:
        conn = await asyncpg.connect(url, timeout=connect_timeout, **connect_options(settings.database_pooler))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        c.worst("warn", f"read replica {where} (AGENTRT_DATABASE_READ_URL): not reachable ({type(exc).__name__}: "
                        f"{exc}); the CLI, console and API cannot connect until it is, or the URL is unset.")
        return
    try:
        standby, lag = await replica_lag(conn)
        has_runs = await conn.fetchval("SELECT to_regclass('runs') IS NOT NULL")
    finally:
        await conn.close(timeout=2)
    c.facts["read_replica_lag_s"] = lag
    if not has_runs:
        c.worst("warn", f"read replica {where}: no runs table there: is it a replica of this database?")
    elif not standby:
        c.worst("warn", f"read replica {where} is not in recovery (a primary, a promoted replica?): reads work "
                        "but take nothing off the primary; point AGENTRT_DATABASE_READ_URL at a replica.")
    elif lag is None:
        c.worst("warn", f"read replica {where}: lag unknown (nothing replayed yet)")
    elif lag > LAG_WARN_S:
        c.worst("warn", f"read replica {where} is {lag:.0f} s behind: listings, counts and the inbox show the past "
                        "(is replication streaming? see pg_stat_replication on the primary).")
    else:
        c.worst("ok", f"read replica {where}: {lag:.1f} s behind; listings read there, decisions and writes go "
                      "to the primary.")
